"""The user-item graph partitioned by rows over a device mesh, and LightGCN propagation on it.

With N devices, device k owns a block of users and a block of items:

    users [k * Ub, (k + 1) * Ub) and items [k * Ib, (k + 1) * Ib),
    Ub = ceil(U / N), Ib = ceil(I / N),

so the ID tables, padded with zero rows to N * Ub and N * Ib, are simply sharded by rows, and a
user or item keeps its id. Device k's R = Ub + Ib rows are its users then its items; node
(k, r) has the PARTITIONED id k * R + r. Each device stores the edges INTO its rows (a CSR
block [R, N * R] over partitioned ids), about 1/N of the graph, padded to the largest block.

One propagation layer on device k is ``y_k = Â[rows of k, :] x``: an all-gather of the
[R, d] blocks (the only communication), then the local CSR product. Â is symmetric (a
relabelling of D^-1/2 A D^-1/2), so the backward pass is the same: all-gather the
cotangent, then the same local product (`partitioned_product`'s custom VJP) — no
reduce-scatter of a dense [N * R, d] gradient.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jraph
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

from recgoat_jax.graph.sparse import csr_matmul


@dataclasses.dataclass(frozen=True)
class NodeLayout:
    """Which device holds which user and item rows (module docstring)."""

    n_users: int
    n_items: int
    n_parts: int

    @property
    def users_per_part(self) -> int:
        return -(-self.n_users // self.n_parts)

    @property
    def items_per_part(self) -> int:
        return -(-self.n_items // self.n_parts)

    @property
    def rows_per_part(self) -> int:
        return self.users_per_part + self.items_per_part

    def partitioned_ids(self, nodes: np.ndarray) -> np.ndarray:
        """Partitioned ids of nodes numbered users 0..U-1 then items U..U+I-1: [E] -> [E]."""
        nodes = np.asarray(nodes, np.int64)
        is_item = nodes >= self.n_users
        index = np.where(is_item, nodes - self.n_users, nodes)
        block = np.where(is_item, self.items_per_part, self.users_per_part)
        part, offset = np.divmod(index, block)
        return part * self.rows_per_part + offset + is_item * self.users_per_part

    def pad_users(self, table: np.ndarray) -> np.ndarray:
        """[U, d] -> [N * Ub, d] with zero rows at the end (ids unchanged)."""
        return _pad_rows(table, self.n_parts * self.users_per_part)

    def pad_items(self, table: np.ndarray) -> np.ndarray:
        """[I, d] -> [N * Ib, d] with zero rows at the end (ids unchanged)."""
        return _pad_rows(table, self.n_parts * self.items_per_part)


def _pad_rows(table, rows: int):
    """`table` with zero rows appended up to `rows`; a numpy table stays on host."""
    pad = rows - table.shape[0]
    xp = np if isinstance(table, np.ndarray) else jnp
    return xp.pad(table, [(0, pad)] + [(0, 0)] * (table.ndim - 1)) if pad else table


class PartitionedGraph(NamedTuple):
    """Each device's CSR block of Â, stacked on a leading device axis (shard it over the mesh).

    values: [N, E_max] float32 (padding 0); senders: [N, E_max] int32 partitioned ids of the
    sources (padding 0); indptr: [N, R + 1] int32 row pointers over the device's R rows.
    """

    values: np.ndarray
    senders: np.ndarray
    indptr: np.ndarray


def partition_graph(graph: jraph.GraphsTuple, layout: NodeLayout) -> PartitionedGraph:
    """Split `normalized_user_item_graph`'s edges by the device that owns their receiver."""
    senders = layout.partitioned_ids(np.asarray(graph.senders))
    receivers = layout.partitioned_ids(np.asarray(graph.receivers))
    rows = layout.rows_per_part
    part, local = np.divmod(receivers, rows)
    order = np.lexsort((senders, local, part))
    senders, part, local = senders[order], part[order], local[order]
    values = np.asarray(graph.edges, np.float32)[order]
    counts = np.bincount(part, minlength=layout.n_parts)
    width = max(int(counts.max(initial=0)), 1)
    starts = np.concatenate([[0], np.cumsum(counts)])
    out_values = np.zeros((layout.n_parts, width), np.float32)
    out_senders = np.zeros((layout.n_parts, width), np.int32)
    out_indptr = np.zeros((layout.n_parts, rows + 1), np.int32)
    for k in range(layout.n_parts):
        block = slice(starts[k], starts[k + 1])
        out_values[k, :counts[k]] = values[block]
        out_senders[k, :counts[k]] = senders[block]
        # padding edges sit past the last row pointer: the product never reads them
        out_indptr[k, 1:] = np.cumsum(np.bincount(local[block], minlength=rows))
    return PartitionedGraph(out_values, out_senders, out_indptr)


def partitioned_product(axis: str):
    """``product(values [E_max], senders [E_max], indptr [R + 1], x [R, d]) -> [R, d]``, to
    call inside `shard_map` over `axis`: this device's rows of Â x (x row-sharded)."""

    def local(values, senders, indptr, x):
        full = jax.lax.all_gather(x, axis, tiled=True)  # [N * R, d]
        return csr_matmul(values, senders, indptr, full)

    @jax.custom_vjp
    def product(values, senders, indptr, x):
        return local(values, senders, indptr, x)

    def fwd(values, senders, indptr, x):
        return local(values, senders, indptr, x), (values, senders, indptr)

    def bwd(residuals, cotangent):  # Â is symmetric: the same product of the cotangent
        values, senders, indptr = residuals
        return None, None, None, local(values, senders, indptr, cotangent)

    product.defvjp(fwd, bwd)
    return product


def partitioned_lightgcn(mesh: Mesh, axis: str, n_layers: int):
    """``propagate(graph, e_user [N*Ub, d], e_item [N*Ib, d]) -> (z_user, z_item)``: LightGCN
    (the mean of x0, Âx0, ..., Â^L x0) with every table and the graph sharded by rows over
    `axis` of `mesh` (`PartitionedGraph` arrays: their leading device axis)."""
    product = partitioned_product(axis)

    def body(values, senders, indptr, e_user, e_item):
        values, senders, indptr = values[0], senders[0], indptr[0]
        n_user_rows = e_user.shape[0]
        with jax.named_scope("propagation"):
            x = jnp.concatenate([e_user, e_item])
            total = x
            for _ in range(n_layers):
                x = product(values, senders, indptr, x)
                total = total + x
            total = total / (n_layers + 1)
        return total[:n_user_rows], total[n_user_rows:]

    rows = P(axis)
    # check_vma off: the custom VJP's cotangent comes out of an all-gather (device-invariant
    # to the type checker) although every device's block of it differs.
    sharded = jax.shard_map(body, mesh=mesh, in_specs=(rows, rows, rows, rows, rows),
                            out_specs=(rows, rows), check_vma=False)

    def propagate(graph: PartitionedGraph, e_user, e_item):
        return sharded(graph.values, graph.senders, graph.indptr, e_user, e_item)

    return propagate


# ----------------------------------------------------------------------------- ID tables in state

USER_TABLE, ITEM_TABLE = "embedding_user", "embedding_item"


def _table_of(path) -> str | None:
    """USER_TABLE / ITEM_TABLE when a pytree path runs through that parameter (the parameter
    itself, or its Adam moments, which mirror the parameter tree), else None."""
    names = {getattr(k, "key", getattr(k, "name", None)) for k in path}
    return USER_TABLE if USER_TABLE in names else ITEM_TABLE if ITEM_TABLE in names else None


def pad_tables(tree, layout: NodeLayout):
    """Every ID table (and its optimiser moments) in `tree` padded to the partitioned rows."""
    pad = {USER_TABLE: layout.pad_users, ITEM_TABLE: layout.pad_items}
    return jax.tree_util.tree_map_with_path(
        lambda path, x: pad[t](x) if (t := _table_of(path)) and jnp.ndim(x) else x, tree)


def unpad_tables(tree, layout: NodeLayout):
    """The inverse of `pad_tables`: every ID table cut back to its U or I rows."""
    rows = {USER_TABLE: layout.n_users, ITEM_TABLE: layout.n_items}
    return jax.tree_util.tree_map_with_path(
        lambda path, x: x[:rows[t]] if (t := _table_of(path)) and jnp.ndim(x) else x, tree)


def table_shardings(tree, mesh: Mesh, axis: str):
    """NamedShardings for `tree` (arrays or shape structs): the ID tables and their moments
    split by rows over `axis`, everything else replicated."""
    from jax.sharding import NamedSharding

    rows, whole = NamedSharding(mesh, P(axis)), NamedSharding(mesh, P())
    return jax.tree_util.tree_map_with_path(
        lambda path, x: rows if _table_of(path) and len(x.shape) else whole, tree)
