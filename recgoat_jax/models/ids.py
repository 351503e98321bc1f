"""The ID (collaborative) side every trained model shares: one embedding row per user and per
item, and LightGCN propagation over the user-item graph."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from recgoat_jax.graph.bipartite import lightgcn_propagate


class IdEmbeddings(nn.Module):
    """Parameters ``embedding_user`` [U, d] and ``embedding_item`` [I, d], N(0, std^2) as the
    reference. Calling it returns them as a dict with those two keys."""

    n_users: int
    n_items: int
    dim: int
    std: float

    @nn.compact
    def __call__(self) -> dict:
        init = nn.initializers.normal(self.std)
        return {"embedding_user": self.param("embedding_user", init, (self.n_users, self.dim)),
                "embedding_item": self.param("embedding_item", init, (self.n_items, self.dim))}


def propagate_ids(ids: dict, graph, n_layers: int) -> tuple[jax.Array, jax.Array]:
    """LightGCN embeddings from `IdEmbeddings` output: (z_user [U, d], z_item [I, d])."""
    e_user, e_item = ids["embedding_user"], ids["embedding_item"]
    if n_layers == 0:
        return e_user, e_item
    x = lightgcn_propagate(graph, jnp.concatenate([e_user, e_item]), n_layers)
    return x[: e_user.shape[0]], x[e_user.shape[0]:]
