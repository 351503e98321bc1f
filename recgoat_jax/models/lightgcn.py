"""LightGCN (He et al. 2020) and MF, which is LightGCN with zero propagation layers."""

from __future__ import annotations

from jax.sharding import Mesh

from recgoat_jax import losses
from recgoat_jax.data import Dataset
from recgoat_jax.graph import partition
from recgoat_jax.graph.bipartite import normalized_user_item_graph
from recgoat_jax.train.parallel import DATA_AXIS
from recgoat_jax.models.base import Recommender
from recgoat_jax.models.ids import IdEmbeddings, propagate_ids


def lightgcn(dataset: Dataset, *, dim: int, n_layers: int, init_std: float,
             decay: float, mesh: Mesh | None = None) -> Recommender:
    """LightGCN with `n_layers` propagation layers ("mf" when 0), trained with BPR + decay * L2.

    Params: {"embedding_user": [U, d], "embedding_item": [I, d]} (`IdEmbeddings`); with
    `mesh` (``train.sharding = "graph"``) padded to [N * Ub, d] and [N * Ib, d], N the devices
    of `mesh`, the graph split by rows over them (`recgoat_jax.graph.partition`). The same
    initial values either way: the tables are drawn at [U, d] and [I, d], then padded.
    """
    if n_layers < 0:
        raise ValueError(f"lightgcn: n_layers must be >= 0, got {n_layers}")
    name = "lightgcn" if n_layers > 0 else "mf"
    module = IdEmbeddings(dataset.n_users, dataset.n_items, dim, init_std)
    graph = (normalized_user_item_graph(dataset.n_users, dataset.n_items, dataset.train)
             if n_layers > 0 else None)
    layout = (None if mesh is None else
              partition.NodeLayout(dataset.n_users, dataset.n_items, mesh.shape[DATA_AXIS]))
    if layout is None:
        inputs = {"graph": graph} if graph is not None else {}

        def init(key):
            return module.init({"params": key})["params"]

        def propagated(params, inputs):  # (z_user, z_item) at the tables' rows
            return propagate_ids(params, inputs.get("graph"), n_layers)

        embed = propagated
    else:
        inputs = {"graph": partition.partition_graph(graph, layout)} if graph is not None else {}
        propagate = partition.partitioned_lightgcn(mesh, DATA_AXIS, n_layers)

        def init(key):
            return partition.pad_tables(module.init({"params": key})["params"], layout)

        def propagated(params, inputs):
            e_user, e_item = params["embedding_user"], params["embedding_item"]
            return propagate(inputs["graph"], e_user, e_item) if n_layers else (e_user, e_item)

        def embed(params, inputs):
            z_user, z_item = propagated(params, inputs)
            return z_user[:dataset.n_users], z_item[:dataset.n_items]

    def loss_with(values):
        def loss(params, inputs, batch, key):
            z_user, z_item = propagated(params, inputs)  # ids index padded tables unchanged
            return losses.bpr_with_l2(z_user, z_item, params, batch.users, batch.pos,
                                      batch.neg, batch.mask, values.get("loss.decay", decay))
        return loss

    hyper = {"loss.decay": decay}
    return Recommender(name=name, init=init, loss=loss_with(hyper), embed=embed, inputs=inputs,
                       hyper=hyper, loss_with=loss_with, layout=layout)
