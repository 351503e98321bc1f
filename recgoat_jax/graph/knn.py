"""kNN graphs from raw feature tables (REFERENCE.md section 2): the item-item graph of each
modality and, for RecGOAT's user side, the user-user graph of each user feature; `knn_graph`
builds both (rows are "items" below, users for a user graph).

For one feature table X [I, f]:
  1. S = normalise_rows(X) @ normalise_rows(X)^T (cosine), diagonal set to ``diagonal_value``
     (0, as the reference does; ``-inf`` never picks an item as its own neighbour);
  2. the k largest entries of row i give edges i -> j;
  3. the edge set is symmetrised (add j -> i) and duplicates are removed;
  4. the GAT layer sees one extra self-loop per node (``with_self_loops``), which the reference
     adds at every forward pass.

S is computed ``block_size`` rows at a time on the default jax device, so the I x I matrix
never exists at once (Electronics: 63,001 items). The similarity matmul runs at
``Precision.HIGHEST`` so that accelerators do not pick neighbours from bf16 products.
Ties are broken towards the lower item index (``jax.lax.top_k``).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import jraph
import numpy as np

# torch.nn.functional.normalize's eps: an all-zero feature row stays zero (similarity 0).
_NORM_EPS = 1e-12


def _normalise_rows(features: np.ndarray) -> np.ndarray:
    """features: [I, f] -> rows scaled to unit L2 norm (zero rows stay zero): [I, f] float32."""
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return (features / np.maximum(norms, _NORM_EPS)).astype(np.float32)


@partial(jax.jit, static_argnames=("k",))
def _block_top_k(
    block_rows: jax.Array, all_rows: jax.Array, first_row: jax.Array, diagonal_value: jax.Array, k: int
) -> jax.Array:
    """Top-k neighbours of one row block.

    block_rows: [B, f] unit rows with global indices first_row .. first_row + B - 1;
    all_rows: [I, f] unit rows. Returns neighbour indices [B, k] int32, best first.
    """
    similarity = jnp.dot(block_rows, all_rows.T, precision=jax.lax.Precision.HIGHEST)  # [B, I]
    row_ids = first_row + jnp.arange(block_rows.shape[0])
    is_diagonal = jnp.arange(all_rows.shape[0])[None, :] == row_ids[:, None]
    similarity = jnp.where(is_diagonal, diagonal_value, similarity)
    _, neighbours = jax.lax.top_k(similarity, k)
    return neighbours.astype(jnp.int32)


def _validate(features: np.ndarray, k: int, block_size: int) -> np.ndarray:
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"knn_edges: features must be 2-D [items, dims], got shape {features.shape}")
    n_items = features.shape[0]
    if not np.issubdtype(features.dtype, np.floating):
        raise ValueError(f"knn_edges: features must be floating point, got dtype {features.dtype}")
    if not np.all(np.isfinite(features)):
        bad_rows = np.flatnonzero(~np.all(np.isfinite(features), axis=1))
        raise ValueError(
            f"knn_edges: features hold NaN/inf in {bad_rows.size} rows (first item ids: {bad_rows[:5].tolist()})"
        )
    if not 0 < k < n_items:
        raise ValueError(f"knn_edges: need 0 < k < number of items; got k={k} with {n_items} items")
    if block_size <= 0:
        raise ValueError(f"knn_edges: block_size must be positive, got {block_size}")
    return features


def knn_neighbours(
    features: np.ndarray, k: int, block_size: int = 4096, diagonal_value: float = 0.0
) -> np.ndarray:
    """Each item's k most cosine-similar items, computed in row blocks.

    features: [I, f] float. Returns [I, k] int32, row i = neighbours of item i, best first.
    """
    features = _validate(features, k, block_size)
    unit_rows = _normalise_rows(features)
    n_items = unit_rows.shape[0]
    block_size = min(block_size, n_items)
    all_rows = jnp.asarray(unit_rows)
    blocks = []
    for first in range(0, n_items, block_size):
        block_rows = unit_rows[first : first + block_size]
        # Zero-pad the last block to block_size rows: every block has one shape, one compilation.
        block_rows = np.pad(block_rows, ((0, block_size - block_rows.shape[0]), (0, 0)))
        neighbours = _block_top_k(
            jnp.asarray(block_rows), all_rows, jnp.int32(first), jnp.float32(diagonal_value), k
        )
        blocks.append(np.asarray(neighbours))
    return np.concatenate(blocks)[:n_items]


def knn_edges(
    features: np.ndarray, k: int, block_size: int = 4096, diagonal_value: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Symmetrised, duplicate-free kNN edge list of one modality (no self-loops added).

    features: [I, f] float32 raw features; k: neighbours per item (0 < k < I);
    block_size: rows of the similarity matrix held at once (memory ~ 4 * block_size * I bytes);
    diagonal_value: what S[i, i] is set to before top-k (0.0 = reference).
    Returns (senders [E] int32, receivers [E] int32), messages flow sender -> receiver,
    sorted by receiver then sender; k * I <= E <= 2 * k * I.
    """
    neighbours = knn_neighbours(features, k, block_size, diagonal_value)  # [I, k]
    n_items = neighbours.shape[0]
    rows = np.repeat(np.arange(n_items, dtype=np.int64), k)
    cols = neighbours.reshape(-1).astype(np.int64)
    # Both directions; np.unique on receiver * I + sender dedupes and sorts by (receiver, sender).
    senders = np.concatenate([rows, cols])
    receivers = np.concatenate([cols, rows])
    keys = np.unique(receivers * n_items + senders)
    return (keys % n_items).astype(np.int32), (keys // n_items).astype(np.int32)


def with_self_loops(
    senders: np.ndarray, receivers: np.ndarray, n_nodes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Add one self-loop per node (as DGL's ``add_self_loop``: existing self-edges are kept).

    senders, receivers: [E] ints sorted by receiver. Returns ([E + n_nodes], [E + n_nodes]) int32,
    still sorted by receiver (each node's self-loop comes after its other incoming edges).
    """
    senders = np.asarray(senders)
    receivers = np.asarray(receivers)
    if senders.shape != receivers.shape or senders.ndim != 1:
        raise ValueError(
            f"with_self_loops: senders and receivers must be 1-D of equal length, got {senders.shape} and {receivers.shape}"
        )
    if senders.size and (min(senders.min(), receivers.min()) < 0 or max(senders.max(), receivers.max()) >= n_nodes):
        raise ValueError(f"with_self_loops: node ids must lie in [0, {n_nodes})")
    if np.any(np.diff(receivers) < 0):
        raise ValueError("with_self_loops: receivers must be sorted (ascending)")
    nodes = np.arange(n_nodes)
    all_senders = np.concatenate([senders, nodes])
    all_receivers = np.concatenate([receivers, nodes])
    order = np.argsort(all_receivers, kind="stable")
    return all_senders[order].astype(np.int32), all_receivers[order].astype(np.int32)


def knn_graph(
    features: np.ndarray, k: int, block_size: int = 4096, diagonal_value: float = 0.0
) -> jraph.GraphsTuple:
    """The kNN item graph as the GAT layer consumes it: ``knn_edges`` plus one self-loop per node.

    features: [I, f]. Returns a GraphsTuple with nodes=None, edges=None, senders/receivers [E]
    int32 sorted by receiver, n_node=[I], n_edge=[E].
    """
    senders, receivers = knn_edges(features, k, block_size, diagonal_value)
    n_items = np.asarray(features).shape[0]
    senders, receivers = with_self_loops(senders, receivers, n_items)
    return jraph.GraphsTuple(
        nodes=None,
        edges=None,
        senders=senders,
        receivers=receivers,
        globals=None,
        n_node=np.array([n_items], np.int32),
        n_edge=np.array([senders.size], np.int32),
    )
