"""RecGOAT: LightGCN ID embeddings, GAT modality branches on item kNN graphs, OAT fusion, and the
paper's optional user side (user features -> user kNN graph -> GAT branch).

Parameter tree (names mirror the public implementation's state_dict, see `recgoat_jax.convert`):
  cf/{embedding_user [U, d], embedding_item [I, d]}
  branch_<m>/{proj/{kernel, bias}, gat_0/{kernel, attn_l, attn_r, bias}, ...}
  fuse/{delta_<m> [d, d], weight_<m> [], ln/{scale, bias}}
  user_branch_<name>/... and user_gate [] (a logit: the branch's share is sigmoid(user_gate))
  when the user side is on.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from recgoat_jax import losses
from recgoat_jax.config import ModelConfig, RunConfig
from recgoat_jax.data import Dataset
from recgoat_jax.graph.bipartite import normalized_user_item_graph
from recgoat_jax.graph.gat import ModalityBranch
from recgoat_jax.graph.knn import knn_edges, with_self_loops
from recgoat_jax.models.base import Batch, Recommender, compute_dtype
from recgoat_jax.models.fusion import OATFusion
from recgoat_jax.models.lightgcn import propagate_ids
from recgoat_jax.ot.distribution import ot_loss


class IdEmbeddings(nn.Module):
    n_users: int
    n_items: int
    dim: int
    std: float

    @nn.compact
    def __call__(self):
        init = nn.initializers.normal(self.std)
        return {"embedding_user": self.param("embedding_user", init, (self.n_users, self.dim)),
                "embedding_item": self.param("embedding_item", init, (self.n_items, self.dim))}


class RecGOAT(nn.Module):
    n_users: int
    n_items: int
    modalities: tuple[str, ...]
    user_modalities: tuple[str, ...]
    cfg: ModelConfig
    dtype: Any = jnp.float32  # operand dtype of the dense matmuls (train.precision)

    def setup(self):
        c = self.cfg
        self.cf = IdEmbeddings(self.n_users, self.n_items, c.dim, c.init_std)
        branch = dict(dim=c.dim, n_layers=c.gat_layers, heads=c.gat_heads,
                      feat_drop=c.feat_dropout, attn_drop=c.attn_dropout, dropout=c.dropout,
                      dtype=self.dtype)
        self.branches = {m: ModalityBranch(**branch, name=f"branch_{m}") for m in self.modalities}
        self.user_branches = {m: ModalityBranch(**branch, name=f"user_branch_{m}")
                              for m in self.user_modalities}
        self.fuse = OATFusion(self.modalities, c.oat, c.dropout, dtype=self.dtype)
        if self.user_modalities:
            g = c.user_gate_init
            if not 0.0 < g < 1.0:
                raise ValueError(f"model.user_gate_init must be in (0, 1), got {g}")
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
        z_user, z_cf = propagate_ids(ids, inputs.get("graph"), self.cfg.n_layers)
        z_modal = {m: self.branches[m](inputs["features"][m], *inputs["knn"][m], deterministic)
                   for m in self.modalities}
        z_item, plans = self.fuse(z_cf, z_modal, deterministic)
        if self.user_modalities:
            z_sem = sum(self.user_branches[m](inputs["user_features"][m], *inputs["user_knn"][m],
                                              deterministic) for m in self.user_modalities)
            share = jax.nn.sigmoid(self.user_gate)
            z_user = (1.0 - share) * z_user + share * z_sem / len(self.user_modalities)
        return {"z_user": z_user, "z_item": z_item, "z_item_cf": z_cf, "z_modal": z_modal,
                "plans": plans, "ids": ids}


def _graph_inputs(features: dict[str, np.ndarray], k: int) -> dict:
    out = {}
    for m, x in features.items():
        s, r = knn_edges(x, k)
        s, r = with_self_loops(s, r, x.shape[0])
        out[m] = (jnp.asarray(s), jnp.asarray(r))
    return out


def build_inputs(cfg: RunConfig, dataset: Dataset, modalities, user_modalities) -> dict:
    """Graphs and features, built once on host: {graph, features, knn[, user_features, user_knn]}."""
    inputs = {"features": {m: jnp.asarray(dataset.item_features[m]) for m in modalities},
              "knn": _graph_inputs({m: dataset.item_features[m] for m in modalities},
                                   cfg.model.knn_k)}
    if cfg.model.n_layers > 0:
        inputs["graph"] = normalized_user_item_graph(dataset.n_users, dataset.n_items, dataset.train)
    if user_modalities:
        inputs["user_features"] = {m: jnp.asarray(dataset.user_features[m]) for m in user_modalities}
        inputs["user_knn"] = _graph_inputs({m: dataset.user_features[m] for m in user_modalities},
                                           cfg.model.user_knn_k)
    return inputs


def select_modalities(cfg: ModelConfig, dataset: Dataset) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Item modalities (config order, or every feature file present, sorted) and user ones."""
    modalities = tuple(cfg.modalities) or tuple(sorted(dataset.item_features))
    missing = [m for m in modalities if m not in dataset.item_features]
    if missing:
        raise ValueError(f"model.modalities names {missing}, but the dataset has item features "
                         f"{sorted(dataset.item_features)}")
    user_modalities = tuple(sorted(dataset.user_features)) if cfg.user_side else ()
    return modalities, user_modalities


def recgoat_loss(cfg: RunConfig, out: dict, batch: Batch) -> tuple[jax.Array, dict]:
    """BPR + decay * Reg + cl_weight * CL (+ ot_weight * distribution-level OT). out: RecGOAT()."""
    lc = cfg.loss
    zu, zi, ids = out["z_user"][batch.users], out["z_item"], out["ids"]
    bpr = losses.bpr(jnp.sum(zu * zi[batch.pos], -1), jnp.sum(zu * zi[batch.neg], -1), batch.mask)
    reg = losses.l2_reg(batch.mask, ids["embedding_user"][batch.users],
                        ids["embedding_item"][batch.pos], ids["embedding_item"][batch.neg])
    terms = {"bpr": bpr, "reg": reg}
    total = bpr + lc.decay * reg
    cf, modal = out["z_item_cf"], out["z_modal"]
    if lc.contrastive == "reference":
        cl = losses.reference_contrastive(
            zu, zi[batch.pos], (cf[batch.pos], cf[batch.neg]),
            {m: (z[batch.pos], z[batch.neg]) for m, z in modal.items()},
            lc.modality_weight, lc.temperature, batch.mask, lc.infonce_block)
    elif lc.contrastive == "cmcl":
        cl = losses.cmcl(zu, zi[batch.pos], {m: z[batch.pos] for m, z in modal.items()},
                         lc.modality_weight, lc.temperature, batch.mask, lc.infonce_block)
    elif lc.contrastive == "none":
        cl = None
    else:
        raise ValueError(f"loss.contrastive must be 'reference', 'cmcl' or 'none', got {lc.contrastive!r}")
    if cl is not None:
        terms["cl"] = cl
        total = total + lc.cl_weight * cl
    if lc.ot_loss != "none" and lc.ot_weight > 0:
        # The batch is a random sample of pairs, so its first `ot_rows` rows are one too: the
        # O(B^2) Sinkhorn between point clouds then costs (ot_rows / B)^2 of the full batch's.
        rows = batch.pos[: lc.ot_rows] if lc.ot_rows > 0 else batch.pos
        mask = batch.mask[: rows.shape[0]]
        ot = sum(ot_loss(losses.l2_normalize(z[rows]), losses.l2_normalize(cf[rows]), lc.ot_loss,
                         lc.ot_epsilon, mask) for z in modal.values()) / max(len(modal), 1)
        terms["ot"] = ot
        total = total + lc.ot_weight * ot
    return total, terms


def build_recgoat(cfg: RunConfig, dataset: Dataset) -> Recommender:
    modalities, user_modalities = select_modalities(cfg.model, dataset)
    module = RecGOAT(dataset.n_users, dataset.n_items, modalities, user_modalities, cfg.model,
                     dtype=compute_dtype(cfg.train.precision))
    inputs = build_inputs(cfg, dataset, modalities, user_modalities)

    def init(key):
        return module.init({"params": key}, inputs, deterministic=True)["params"]

    def forward(params, inputs, key=None):
        if key is None:
            return module.apply({"params": params}, inputs, deterministic=True)
        return module.apply({"params": params}, inputs, deterministic=False, rngs={"dropout": key})

    def loss(params, inputs, batch, key):
        out = forward(params, inputs, key)
        total, terms = recgoat_loss(cfg, out, batch)
        # plan health, for the non-finite guard: a plan that is all zeros or NaN is reported
        for m, plan in out["plans"].items():
            terms[f"plan_{m}_sum"] = jnp.sum(plan)
        return total, terms

    def embed(params, inputs):
        out = forward(params, inputs)
        return out["z_user"], out["z_item"]

    return Recommender(name="recgoat", init=init, loss=loss, embed=embed, inputs=inputs)
