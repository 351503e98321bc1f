"""RecGOAT: LightGCN ID embeddings, GAT modality branches on item kNN graphs, OAT fusion, and the
paper's optional user side (user features -> user kNN graph -> GAT branch).

Parameter tree (names mirror the public implementation's state_dict, see `recgoat_jax.convert`):
  cf/{embedding_user [U, d], embedding_item [I, d]}
  branch_<m>/{proj/{kernel, bias}, gat_0/{kernel, attn_l, attn_r, bias}, ...}
  fuse/{delta_<m> [d, d], weight_<m> [], ln/{scale, bias}}
  user_branch_<name>/... and user_gate [] (a logit: the branch's share is sigmoid(user_gate))
  when the user side is on.

Everything here takes plain numbers and strings; `recgoat_jax.models.registry` reads the run
configuration and builds these.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from recgoat_jax import losses
from recgoat_jax.data import Dataset
from recgoat_jax.graph import partition
from recgoat_jax.graph.bipartite import normalized_user_item_graph
from recgoat_jax.graph.gat import ModalityBranch, feature_table
from recgoat_jax.graph.knn import knn_graph
from recgoat_jax.graph.partition_gat import PartitionedEdges, check_edge_count, partition_edges
from recgoat_jax.graph.sparse import reverse_edges
from recgoat_jax.models.base import Batch, Recommender
from recgoat_jax.models.fusion import FusionOptions, OATFusion, initial_params, mix_weights
from recgoat_jax.models.ids import IdEmbeddings, propagate_ids
from recgoat_jax.ot.distribution import ot_loss
from recgoat_jax.ot.plan import plan_diagnostics

CONTRASTIVE = ("reference", "cmcl", "none")


class RecGOAT(nn.Module):
    """The whole model; `__call__` runs the full forward pass over all users and items.

    n_layers: LightGCN layers; gat_*, feat_dropout, attn_dropout, dropout: the modality
    branches (`ModalityBranch`; `dropout` also follows the fusion); fusion: `FusionOptions`;
    user_gate_init: the starting share (0..1, open) of the user branch in z_user.
    mesh: the 1-D device mesh when ``train.sharding = "graph"``: the inputs are then
    `build_inputs(..., layout=...)`'s partitioned ones and every [U, d] / [I, d] table below is
    [N Ub, d] / [N Ib, d], split by rows over the mesh (`recgoat_jax.graph.partition`).
    """

    n_users: int
    n_items: int
    modalities: tuple[str, ...]
    user_modalities: tuple[str, ...]
    dim: int
    n_layers: int
    init_std: float
    gat_layers: int
    gat_heads: int
    feat_dropout: float
    attn_dropout: float
    dropout: float
    fusion: FusionOptions
    user_gate_init: float = 0.1
    dtype: Any = jnp.float32  # operand dtype of the dense matmuls (mixed precision: bf16)
    mesh: Any = None

    def setup(self):
        self.cf = IdEmbeddings(self.n_users, self.n_items, self.dim, self.init_std)
        branch = dict(dim=self.dim, n_layers=self.gat_layers, heads=self.gat_heads,
                      feat_drop=self.feat_dropout, attn_drop=self.attn_dropout,
                      dropout=self.dropout, dtype=self.dtype, mesh=self.mesh)
        self.branches = {m: ModalityBranch(**branch, name=f"branch_{m}") for m in self.modalities}
        self.user_branches = {m: ModalityBranch(**branch, name=f"user_branch_{m}")
                              for m in self.user_modalities}
        self.fuse = OATFusion(self.modalities, self.fusion, self.dropout, dtype=self.dtype)
        if self.user_modalities:
            g = self.user_gate_init
            if not 0.0 < g < 1.0:
                raise ValueError(f"user_gate_init must be in (0, 1), got {g}")
            # A convex mix: an unconstrained gate becomes a free scale of the user embeddings
            # (it went to -1.2 within 8 epochs on noise profiles, amplifying z_cf against
            # z_sem), and the user branch then hurts whenever the profiles carry no signal.
            logit = float(np.log(g / (1.0 - g)))
            self.user_gate = self.param("user_gate", nn.initializers.constant(logit), ())

    def __call__(self, inputs: dict, deterministic: bool) -> dict:
        """Full forward pass over all users and items.

        Returns {"z_user": [U, d], "z_item": [I, d] fused, "z_item_cf": [I, d],
                 "z_modal": {m: [I, d]}, "plans": {m: [d, d]}, "ids": layer-0 embeddings}.
        """
        ids = self.cf()
        graph = inputs.get("graph")
        if isinstance(graph, partition.PartitionedGraph):
            propagate = partition.partitioned_lightgcn(self.mesh, self.mesh.axis_names[0],
                                                       self.n_layers)
            z_user, z_cf = propagate(graph, ids["embedding_user"], ids["embedding_item"])
        else:
            z_user, z_cf = propagate_ids(ids, graph, self.n_layers)
        z_modal = {m: _branch(self.branches[m], inputs["features"][m], inputs["knn"][m],
                              deterministic) for m in self.modalities}
        z_item, plans = self.fuse(z_cf, z_modal, deterministic, inputs.get("item_mask"))
        if self.user_modalities:
            z_sem = sum(_branch(self.user_branches[m], inputs["user_features"][m],
                                inputs["user_knn"][m], deterministic)
                        for m in self.user_modalities)
            share = jax.nn.sigmoid(self.user_gate)
            z_user = (1.0 - share) * z_user + share * z_sem / len(self.user_modalities)
        return {"z_user": z_user, "z_item": z_item, "z_item_cf": z_cf, "z_modal": z_modal,
                "plans": plans, "ids": ids}

    def create_params(self, feature_dims: dict, user_feature_dims: dict) -> None:
        """Creates every parameter without a pass over the graph (``init(..., method=...)``):
        flax draws each parameter from its module path and name alone, so these are the values
        `__call__`'s init gives, at [U, d] / [I, d] (then padded for the partitioned model)."""
        self.cf()
        edges = (jnp.arange(2), jnp.arange(2))  # two self-loops
        z_modal = {m: self.branches[m](jnp.zeros((2, f)), *edges, True)
                   for m, f in feature_dims.items()}
        self.fuse(jnp.zeros((2, self.dim)), z_modal, True)
        for m, f in user_feature_dims.items():
            self.user_branches[m](jnp.zeros((2, f)), *edges, True)


def _branch(branch: ModalityBranch, features: jax.Array, knn, deterministic: bool):
    """A modality branch on its kNN graph `knn` = (senders, receivers[, reverse]), or its
    `PartitionedEdges`."""
    if isinstance(knn, PartitionedEdges):
        return branch(features, knn, None, deterministic)
    senders, receivers, *reverse = knn
    return branch(features, senders, receivers, deterministic, *reverse)


def _knn_inputs(features: dict[str, np.ndarray], k: int, rows_per_part: int = 0,
                n_parts: int = 0, heads: int = 1) -> dict:
    """{name: (senders [E], receivers [E], reverse [E])} of each feature table's kNN graph
    (`knn_graph`, symmetric) with its reverse-edge permutation (`GATConv`); with `n_parts`,
    {name: `PartitionedEdges`} over blocks of `rows_per_part` nodes instead."""
    out = {}
    for m, x in features.items():
        graph = knn_graph(x, k)
        if n_parts:
            check_edge_count(len(graph.senders), heads, f"the {m} kNN graph")
            out[m] = partition_edges(graph.senders, graph.receivers, rows_per_part, n_parts)
            continue
        reverse = reverse_edges(graph.senders, graph.receivers)
        out[m] = tuple(jnp.asarray(a) for a in (graph.senders, graph.receivers, reverse))
    return out


def build_inputs(dataset: Dataset, modalities: tuple[str, ...], user_modalities: tuple[str, ...],
                 *, knn_k: int, user_knn_k: int, n_layers: int,
                 layout: partition.NodeLayout | None = None, heads: int = 1) -> dict:
    """Graphs and features, built once on host: {graph, features, knn[, user_features, user_knn]}.

    With `layout` (``train.sharding = "graph"``), partitioned over its devices: features padded
    to [N Ib, f] / [N Ub, f] (plain arrays), the kNN graphs as `PartitionedEdges`, the user-item
    graph as a `PartitionedGraph`, and "item_mask" [N Ib] (False on padding rows), every leaf
    split by its leading axis. `heads`: the GAT heads (the dropout mask's size check).
    """
    n = layout.n_parts if layout else 0
    items = {m: dataset.item_features[m] for m in modalities}
    users = {m: dataset.user_features[m] for m in user_modalities}
    if layout:
        inputs = {"features": {m: layout.pad_items(np.asarray(x, np.float32))
                               for m, x in items.items()},
                  "knn": _knn_inputs(items, knn_k, layout.items_per_part, n, heads),
                  "item_mask": np.arange(n * layout.items_per_part) < dataset.n_items}
    else:
        inputs = {"features": {m: feature_table(x) for m, x in items.items()},
                  "knn": _knn_inputs(items, knn_k)}
    if n_layers > 0:
        graph = normalized_user_item_graph(dataset.n_users, dataset.n_items, dataset.train)
        inputs["graph"] = partition.partition_graph(graph, layout) if layout else graph
    if user_modalities:
        if layout:
            inputs["user_features"] = {m: layout.pad_users(np.asarray(x, np.float32))
                                       for m, x in users.items()}
            inputs["user_knn"] = _knn_inputs(users, user_knn_k, layout.users_per_part, n, heads)
        else:
            inputs["user_features"] = {m: feature_table(x) for m, x in users.items()}
            inputs["user_knn"] = _knn_inputs(users, user_knn_k)
    return inputs


def select_modalities(dataset: Dataset, modalities: tuple[str, ...] = (),
                      user_side: bool = False) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Item modalities (`modalities` in order, or every feature file present, sorted) and the
    user ones (every user feature, sorted, when `user_side`)."""
    modalities = tuple(modalities) or tuple(sorted(dataset.item_features))
    missing = [m for m in modalities if m not in dataset.item_features]
    if missing:
        raise ValueError(f"modalities names {missing}, but the dataset has item features "
                         f"{sorted(dataset.item_features)}")
    user_modalities = tuple(sorted(dataset.user_features)) if user_side else ()
    return modalities, user_modalities


@dataclasses.dataclass(frozen=True)
class LossOptions:
    """RecGOAT's training objective: BPR + decay * Reg + cl_weight * CL (+ ot_weight * OT).

    contrastive: "reference" | "cmcl" | "none"; modality_weight, temperature, infonce_block,
    infonce_distinct: of the contrastive term (`losses.reference_contrastive` / `losses.cmcl`);
    ot_loss: "none" or a kind of `ot.distribution.ot_loss`, with ot_epsilon, on the first
    ot_rows rows (0: all).
    """

    decay: float
    contrastive: str
    cl_weight: float
    modality_weight: float
    temperature: float
    infonce_block: int
    infonce_distinct: bool
    ot_loss: str
    ot_weight: float
    ot_epsilon: float
    ot_rows: int

    def __post_init__(self):
        if self.contrastive not in CONTRASTIVE:
            raise ValueError(f"contrastive must be one of {CONTRASTIVE}, got "
                             f"{self.contrastive!r}")


def recgoat_loss(options: LossOptions, out: dict, batch: Batch) -> tuple[jax.Array, dict]:
    """BPR + decay * Reg + cl_weight * CL (+ ot_weight * distribution-level OT). out: RecGOAT()."""
    lc = options
    zi = out["z_item"]
    total, terms = losses.bpr_with_l2(out["z_user"], zi, out["ids"], batch.users, batch.pos,
                                      batch.neg, batch.mask, lc.decay)
    cf, modal = out["z_item_cf"], out["z_modal"]
    # Gathered (table, batch ids), not rows: the contrastive terms then skip repeated rows
    gather = losses.Gathered if lc.infonce_distinct else (lambda table, ids: table[ids])
    zu = gather(out["z_user"], batch.users)
    pos, neg = (lambda z: gather(z, batch.pos)), (lambda z: gather(z, batch.neg))
    if lc.contrastive == "reference":
        cl = losses.reference_contrastive(
            zu, pos(zi), (pos(cf), neg(cf)), {m: (pos(z), neg(z)) for m, z in modal.items()},
            lc.modality_weight, lc.temperature, batch.mask, lc.infonce_block)
    elif lc.contrastive == "cmcl":
        cl = losses.cmcl(zu, pos(zi), {m: pos(z) for m, z in modal.items()},
                         lc.modality_weight, lc.temperature, batch.mask, lc.infonce_block)
    else:
        cl = None
    if cl is not None:
        terms["cl"] = cl
        total = total + lc.cl_weight * cl
    if lc.ot_loss != "none":
        # The batch is a random sample of pairs, so its first `ot_rows` rows are one too: the
        # O(B^2) Sinkhorn between point clouds then costs (ot_rows / B)^2 of the full batch's.
        rows = batch.pos[: lc.ot_rows] if lc.ot_rows > 0 else batch.pos
        mask = batch.mask[: rows.shape[0]]
        ot = sum(ot_loss(losses.l2_normalize(z[rows]), losses.l2_normalize(cf[rows]), lc.ot_loss,
                         lc.ot_epsilon, mask) for z in modal.values()) / max(len(modal), 1)
        terms["ot"] = ot
        total = total + lc.ot_weight * ot
    return total, terms


def diagnostics(module: RecGOAT, params) -> dict[str, jax.Array]:
    """What the fusion and the user side are doing, from the parameters alone:
    ``fusion_weight_<m>`` (the weight the fusion applies to each modality: after the softmax
    with weights "softmax", the raw parameter otherwise) and, with the user side on,
    ``user_gate_share`` (sigmoid of the gate logit: the user branch's share of z_user)."""
    raw = jnp.stack([jnp.asarray(params["fuse"][f"weight_{m}"]) for m in module.modalities])
    _, w_modal = mix_weights(raw, module.fusion.weights)
    out = {f"fusion_weight_{m}": w_modal[k] for k, m in enumerate(module.modalities)}
    if module.user_modalities:
        out["user_gate_share"] = jax.nn.sigmoid(params["user_gate"])
    return out


# LossOptions fields and dropout rates a sweep may vary per member (continuous: no shape or
# code path changes; the rates may be traced values, `recgoat_jax.layers.Dropout`); also
# model.oat.epsilon, the transport's regularisation, when it follows no schedule
MEMBER_LOSS_FIELDS = ("decay", "cl_weight", "modality_weight", "temperature", "ot_weight")
DROPOUT_FIELDS = ("feat_dropout", "attn_dropout", "dropout")


def recgoat_recommender(module: RecGOAT, inputs: dict, loss_options: LossOptions,
                        initial_weight_keys: tuple[str, ...] = (),
                        layout: partition.NodeLayout | None = None) -> Recommender:
    """The `Recommender` of a RecGOAT module and the inputs `build_inputs` made for it
    (`layout`: theirs when partitioned, with `module.mesh` set).

    Loss terms: bpr, reg, cl (unless contrastive is "none"), ot (when on), and per modality
    ``plan_<m>_sum`` (the plan's mass: 0 or NaN flags a broken plan) and
    ``plan_<m>_marginal_error`` (`plan_diagnostics`' largest deviation of a row or column sum
    from its target marginal) and ``plan_<m>_marginal_rel_error`` (the same relative to the
    target: 0.05 means some row or column is 5% off; no gradient flows through any of them).
    `initial_weight_keys`: the config key of each modality's initial fusion weight (in the
    module's order), for `hyper` / `init_with`; () leaves them out.
    """
    plan_scale = module.fusion.plan.plan_scale
    fields = [f for f in MEMBER_LOSS_FIELDS
              if not (f == "ot_weight" and loss_options.ot_loss == "none")
              and not (f in ("cl_weight", "modality_weight", "temperature")
                       and loss_options.contrastive == "none")]
    hyper = {f"loss.{f}": getattr(loss_options, f) for f in fields}
    hyper.update({key: w for key, w in zip(initial_weight_keys,
                                           module.fusion.initial_weights)})
    if module.user_modalities:
        hyper["model.user_gate_init"] = module.user_gate_init
    hyper.update({f"model.{field}": getattr(module, field) for field in DROPOUT_FIELDS})
    plan = module.fusion.plan
    if plan.solver != "lowrank" and not plan.epsilon_init:  # no schedule: epsilon is a number
        hyper["model.oat.epsilon"] = plan.epsilon

    def init(key):
        if layout is None:
            return module.init({"params": key}, inputs, deterministic=True)["params"]
        dims = {m: x.shape[1] for m, x in inputs["features"].items()}
        user_dims = {m: x.shape[1] for m, x in inputs.get("user_features", {}).items()}
        params = module.init({"params": key}, dims, user_dims,
                             method=RecGOAT.create_params)["params"]
        return partition.pad_tables(params, layout)

    if layout is not None:  # applied to the padded tables: [N Ub, d] and [N Ib, d]
        module = module.clone(n_users=layout.n_parts * layout.users_per_part,
                              n_items=layout.n_parts * layout.items_per_part)

    def init_with(params, values):
        """`params` with the fusion weights and the user gate starting at `values`."""
        params = jax.tree.map(lambda x: x, params)  # a copy of the containers
        if any(key in values for key in initial_weight_keys):
            weights = [values.get(key, base) for key, base in
                       zip(initial_weight_keys, module.fusion.initial_weights)]
            raw = initial_params(weights, module.fusion.weights)
            for k, m in enumerate(module.modalities):
                params["fuse"][f"weight_{m}"] = raw[k]
        if module.user_modalities and "model.user_gate_init" in values:
            g = jnp.asarray(values["model.user_gate_init"], jnp.float32)
            params["user_gate"] = jnp.log(g / (1.0 - g))
        return params

    def forward(params, inputs, key=None, net=module):
        if key is None:
            return net.apply({"params": params}, inputs, deterministic=True)
        return net.apply({"params": params}, inputs, deterministic=False, rngs={"dropout": key})

    def module_with(values):
        """`module` with the dropout rates and transport epsilon of `values` (may be traced)."""
        changes = {f: values[f"model.{f}"] for f in DROPOUT_FIELDS if f"model.{f}" in values}
        if "model.oat.epsilon" in values:  # the solver's options may hold a traced epsilon
            fusion = module.fusion
            changes["fusion"] = dataclasses.replace(fusion, plan=dataclasses.replace(
                fusion.plan, epsilon=values["model.oat.epsilon"]))
        return module.clone(**changes) if changes else module

    def loss_with(values):
        options = dataclasses.replace(loss_options, **{
            f: values[f"loss.{f}"] for f in fields if f"loss.{f}" in values})
        member_module = module_with(values)

        def loss(params, inputs, batch, key):
            out = forward(params, inputs, key, member_module)
            total, terms = recgoat_loss(options, out, batch)
            # plan health, for the non-finite guard: a plan that is all zeros or NaN is reported
            for m, plan in out["plans"].items():
                terms[f"plan_{m}_sum"] = jnp.sum(plan)
                health = plan_diagnostics(jax.lax.stop_gradient(plan), plan_scale)
                terms[f"plan_{m}_marginal_error"] = health["marginal_error"]
                terms[f"plan_{m}_marginal_rel_error"] = health["relative_error"]
            return total, terms

        return loss

    def embed_with(values):
        member_module = module_with(values)

        def embed(params, inputs):
            out = forward(params, inputs, net=member_module)
            if layout is None:
                return out["z_user"], out["z_item"]
            return out["z_user"][:layout.n_users], out["z_item"][:layout.n_items]

        return embed

    embed = embed_with({})

    return Recommender(name="recgoat", init=init, loss=loss_with(hyper), embed=embed,
                       inputs=inputs, diagnostics=lambda params: diagnostics(module, params),
                       hyper=hyper, loss_with=loss_with, init_with=init_with,
                       embed_with=embed_with, layout=layout)
