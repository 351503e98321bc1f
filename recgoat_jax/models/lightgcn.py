"""LightGCN (He et al. 2020) and MF, which is LightGCN with zero propagation layers."""

from __future__ import annotations

from recgoat_jax import losses
from recgoat_jax.data import Dataset
from recgoat_jax.graph.bipartite import normalized_user_item_graph
from recgoat_jax.models.base import Recommender
from recgoat_jax.models.ids import IdEmbeddings, propagate_ids


def lightgcn(dataset: Dataset, *, dim: int, n_layers: int, init_std: float,
             decay: float) -> Recommender:
    """LightGCN with `n_layers` propagation layers ("mf" when 0), trained with BPR + decay * L2.

    Params: {"embedding_user": [U, d], "embedding_item": [I, d]} (`IdEmbeddings`).
    """
    if n_layers < 0:
        raise ValueError(f"lightgcn: n_layers must be >= 0, got {n_layers}")
    name = "lightgcn" if n_layers > 0 else "mf"
    module = IdEmbeddings(dataset.n_users, dataset.n_items, dim, init_std)
    inputs = {}
    if n_layers > 0:
        inputs["graph"] = normalized_user_item_graph(dataset.n_users, dataset.n_items, dataset.train)

    def init(key):
        return module.init({"params": key})["params"]

    def embed(params, inputs):
        return propagate_ids(params, inputs.get("graph"), n_layers)

    def loss_with(values):
        def loss(params, inputs, batch, key):
            z_user, z_item = embed(params, inputs)
            return losses.bpr_with_l2(z_user, z_item, params, batch.users, batch.pos,
                                      batch.neg, batch.mask, values.get("loss.decay", decay))
        return loss

    hyper = {"loss.decay": decay}
    return Recommender(name=name, init=init, loss=loss_with(hyper), embed=embed, inputs=inputs,
                       hyper=hyper, loss_with=loss_with)
