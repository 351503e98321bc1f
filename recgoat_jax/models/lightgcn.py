"""LightGCN (He et al. 2020) and MF, which is LightGCN with zero propagation layers."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from recgoat_jax import losses
from recgoat_jax.config import RunConfig
from recgoat_jax.data import Dataset
from recgoat_jax.graph.bipartite import lightgcn_propagate, normalized_user_item_graph
from recgoat_jax.models.base import Batch, Recommender


def init_id_embeddings(key, n_users: int, n_items: int, dim: int, std: float) -> dict:
    """{"embedding_user": [U, d], "embedding_item": [I, d]}, both N(0, std^2) as the reference."""
    ku, ki = jax.random.split(key)
    return {
        "embedding_user": std * jax.random.normal(ku, (n_users, dim), jnp.float32),
        "embedding_item": std * jax.random.normal(ki, (n_items, dim), jnp.float32),
    }


def propagate_ids(params: dict, graph, n_layers: int) -> tuple[jax.Array, jax.Array]:
    """LightGCN embeddings: (z_user [U, d], z_item [I, d])."""
    e_user, e_item = params["embedding_user"], params["embedding_item"]
    if n_layers == 0:
        return e_user, e_item
    x = lightgcn_propagate(graph, jnp.concatenate([e_user, e_item]), n_layers)
    return x[: e_user.shape[0]], x[e_user.shape[0]:]


def bpr_with_reg(params: dict, z_user, z_item, batch: Batch, decay: float):
    """BPR on the propagated embeddings + decay * L2 of the batch's layer-0 embeddings."""
    zu = z_user[batch.users]
    bpr = losses.bpr(jnp.sum(zu * z_item[batch.pos], -1), jnp.sum(zu * z_item[batch.neg], -1),
                     batch.mask)
    reg = losses.l2_reg(batch.mask, params["embedding_user"][batch.users],
                        params["embedding_item"][batch.pos], params["embedding_item"][batch.neg])
    return bpr + decay * reg, {"bpr": bpr, "reg": reg}


def build_lightgcn(cfg: RunConfig, dataset: Dataset, n_layers: int | None = None) -> Recommender:
    n_layers = cfg.model.n_layers if n_layers is None else n_layers
    name = "lightgcn" if n_layers > 0 else "mf"
    inputs = {}
    if n_layers > 0:
        inputs["graph"] = normalized_user_item_graph(dataset.n_users, dataset.n_items, dataset.train)

    def init(key):
        return init_id_embeddings(key, dataset.n_users, dataset.n_items, cfg.model.dim,
                                  cfg.model.init_std)

    def embed(params, inputs):
        return propagate_ids(params, inputs.get("graph"), n_layers)

    def loss(params, inputs, batch, key):
        z_user, z_item = embed(params, inputs)
        return bpr_with_reg(params, z_user, z_item, batch, cfg.loss.decay)

    return Recommender(name=name, init=init, loss=loss, embed=embed, inputs=inputs)


def build_mf(cfg: RunConfig, dataset: Dataset) -> Recommender:
    return build_lightgcn(cfg, dataset, n_layers=0)
