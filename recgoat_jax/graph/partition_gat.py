"""Graph attention on a kNN graph partitioned by rows over a device mesh.

With N devices and a node table padded to N * R rows (R = ceil(nodes / N), the item or user
block of `recgoat_jax.graph.partition.NodeLayout`), device k owns nodes [k * R, (k + 1) * R)
and the edges INTO them. The kNN edge list is sorted by receiver, so device k's edges are a
contiguous run of it, kept in its order; a node keeps its id.

One attention layer on device k (`partitioned_attention`): all-gather the [R, H] source scores
and the [R, H, d/H] projected rows (the only communication: O(N R d) per device, as the
propagation's all-gather), then the edge softmax and the weighted sum of its own edges.
Autodiff's transpose of the all-gather is a reduce-scatter of the [N R, H, d/H] cotangent.
The attention dropout mask is drawn per edge from the edge's index in the WHOLE edge list
(`recgoat_jax.layers.bernoulli_at`), so it is the mask the unpartitioned `GATConv` draws.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

from recgoat_jax.graph.sparse import segment_softmax
from recgoat_jax.layers import bernoulli_at


class PartitionedEdges(NamedTuple):
    """Each device's edges into its R rows, stacked on a leading device axis [N, E_max].

    senders: node ids of the sources (padding 0); receivers: LOCAL row of the receiver,
    0..R-1 (padding R: a dummy row past the block); edge_ids: the edge's index in the whole
    sorted edge list (padding 0), for the dropout mask.
    """

    senders: np.ndarray
    receivers: np.ndarray
    edge_ids: np.ndarray


def partition_edges(senders: np.ndarray, receivers: np.ndarray, rows_per_part: int,
                    n_parts: int) -> PartitionedEdges:
    """Split edges sorted by receiver ([E] each) into the blocks of `n_parts` devices owning
    `rows_per_part` consecutive nodes each."""
    senders, receivers = np.asarray(senders, np.int64), np.asarray(receivers, np.int64)
    if len(receivers) > 1 and np.any(np.diff(receivers) < 0):
        raise ValueError("partition_edges: edges must be sorted by receiver")
    part = receivers // rows_per_part
    starts = np.searchsorted(part, np.arange(n_parts + 1))
    width = max(int(np.diff(starts).max(initial=0)), 1)
    out = PartitionedEdges(np.zeros((n_parts, width), np.int32),
                           np.full((n_parts, width), rows_per_part, np.int32),
                           np.zeros((n_parts, width), np.int32))
    for k in range(n_parts):
        block = slice(starts[k], starts[k + 1])
        count = starts[k + 1] - starts[k]
        out.senders[k, :count] = senders[block]
        out.receivers[k, :count] = receivers[block] - k * rows_per_part
        out.edge_ids[k, :count] = np.arange(starts[k], starts[k + 1])
    return out


def partitioned_attention(mesh: Mesh, axis: str, negative_slope: float):
    """``attend(projected [N R, H, d/H], attn_l [H, d/H], attn_r [H, d/H], edges, key, keep)
    -> [N R, H, d/H]``: `GATConv`'s attention-weighted sum over each node's incoming edges,
    rows sharded over `axis`. `edges`: `PartitionedEdges` (arrays on their device axis);
    key: the attention dropout key, or None for no dropout; keep: 1 - the dropout rate."""

    def body(projected, attn_l, attn_r, senders, receivers, edge_ids, key, keep):
        senders, receivers, edge_ids = senders[0], receivers[0], edge_ids[0]
        rows, heads, _ = projected.shape
        score_src = jax.lax.all_gather(jnp.sum(projected * attn_l, axis=-1), axis,
                                       tiled=True)  # [N R, H]
        score_dst = jnp.sum(projected * attn_r, axis=-1)  # [R, H]
        score_dst = jnp.concatenate([score_dst, jnp.zeros((1, heads), score_dst.dtype)])
        logits = jax.nn.leaky_relu(score_src[senders] + score_dst[receivers], negative_slope)
        attention = segment_softmax(logits, receivers, rows + 1)  # [E_max, H]
        if key is not None:
            counters = (edge_ids.astype(jnp.uint32)[:, None] * jnp.uint32(heads)
                        + jnp.arange(heads, dtype=jnp.uint32))
            kept = bernoulli_at(key, keep, counters)
            attention = jax.lax.select(kept, attention / keep, jnp.zeros_like(attention))
        table = jax.lax.all_gather(projected, axis, tiled=True)  # [N R, H, d/H]
        messages = table[senders] * attention[..., None]
        return jax.ops.segment_sum(messages, receivers, rows + 1,
                                   indices_are_sorted=True)[:rows]

    rows, whole = P(axis), P()

    def attend(projected, attn_l, attn_r, edges: PartitionedEdges, key=None, keep=1.0):
        if key is None:
            def run(p, al, ar, s, r, e):
                return body(p, al, ar, s, r, e, None, None)
            args = ()
        else:
            if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
                key = jax.random.key_data(key)
            run, args = body, (key, jnp.asarray(keep, jnp.float32))
        specs = (rows, whole, whole, rows, rows, rows) + (whole,) * len(args)
        sharded = jax.shard_map(run, mesh=mesh, in_specs=specs, out_specs=rows)
        return sharded(projected, attn_l, attn_r, *edges, *args)

    return attend


MAX_MASK_ENTRIES = 2 ** 32  # `bernoulli_at` counts the [E, H] dropout mask in uint32


class EdgeCountError(ValueError):
    """A graph too large for the partitioned attention (`check_edge_count`)."""


def check_edge_count(n_edges: int, heads: int, where: str) -> None:
    """EdgeCountError when the attention dropout mask ([E, H]) would need 2^32 or more
    entries (`MAX_MASK_ENTRIES`)."""
    if n_edges * heads >= MAX_MASK_ENTRIES:
        raise EdgeCountError(f"{where}: {n_edges} edges x {heads} heads exceed the 2^32 entries "
                         "of one attention dropout mask")
