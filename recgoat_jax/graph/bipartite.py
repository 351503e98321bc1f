"""The symmetric-normalised user-item graph and LightGCN propagation.

Nodes are users 0..U-1 followed by items U..U+I-1. Edges hold both directions of every unique
training pair, sorted by receiver, with the weight 1/sqrt(deg(s) deg(r)) precomputed, so one
propagation step is one CSR product (`recgoat_jax.graph.sparse`): exactly D^-1/2 A D^-1/2 E.
The matrix is symmetric, so its backward pass is the same product of the cotangent.
"""

from __future__ import annotations

import jax
import jraph
import numpy as np

from recgoat_jax.graph.sparse import row_pointers, symmetric_csr_matmul


def normalized_user_item_graph(n_users: int, n_items: int, train_pairs: np.ndarray) -> jraph.GraphsTuple:
    """Build D^-1/2 A D^-1/2 over U + I nodes from (user, item) pairs.

    Args:
      train_pairs: [N, 2] (user, item); duplicates are counted once.
    Returns:
      GraphsTuple with ``edges`` = weights [2N'] float32, ``senders`` / ``receivers`` [2N'] int32
      sorted by receiver (then sender), ``n_node`` = [U + I], ``nodes`` None.
    """
    n_nodes = n_users + n_items
    keys = np.unique(train_pairs[:, 0].astype(np.int64) * n_items + train_pairs[:, 1])
    users, items = np.divmod(keys, n_items)
    senders = np.concatenate([users, items + n_users])
    receivers = np.concatenate([items + n_users, users])
    order = np.lexsort((senders, receivers))
    senders, receivers = senders[order], receivers[order]
    degree = np.bincount(receivers, minlength=n_nodes).astype(np.float64)
    weights = 1.0 / np.sqrt(degree[senders] * degree[receivers])
    return jraph.GraphsTuple(
        nodes=None,
        edges=weights.astype(np.float32),
        senders=senders.astype(np.int32),
        receivers=receivers.astype(np.int32),
        n_node=np.array([n_nodes], np.int32),
        n_edge=np.array([len(senders)], np.int32),
        globals=None,
    )


def propagate(graph: jraph.GraphsTuple, x: jax.Array, indptr: jax.Array | None = None) -> jax.Array:
    """One step x <- Â x.  x: [N, d] -> [N, d]; indptr: the graph's CSR row pointers [N + 1]
    (`row_pointers(graph.receivers, N)`, computed here when not given)."""
    if indptr is None:
        indptr = row_pointers(graph.receivers, x.shape[0])
    return symmetric_csr_matmul(graph.edges, graph.senders, indptr, x)


def propagate_segment_sum(graph: jraph.GraphsTuple, x: jax.Array) -> jax.Array:
    """`propagate` as a gather, a scale and a sorted segment sum (the formulation the CSR
    product replaced; kept as the reference of tests and benchmarks)."""
    messages = x[graph.senders] * graph.edges[:, None].astype(x.dtype)
    return jax.ops.segment_sum(messages, graph.receivers, num_segments=x.shape[0],
                               indices_are_sorted=True)


def lightgcn_propagate(graph: jraph.GraphsTuple, x0: jax.Array, n_layers: int) -> jax.Array:
    """Mean of x0, Âx0, ..., Â^L x0.  x0: [N, d] -> [N, d]."""
    with jax.named_scope("propagation"):
        total, x = x0, x0
        indptr = row_pointers(graph.receivers, x0.shape[0])
        for _ in range(n_layers):
            x = propagate(graph, x, indptr)
            total = total + x
        return total / (n_layers + 1)
