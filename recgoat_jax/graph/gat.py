"""Graph attention on item kNN graphs: DGL's ``GATConv`` as the reference uses it, and the
modality branch (projection + GAT layers) built from it (REFERENCE.md section 3).

Edges are given as (senders [E], receivers [E]) sorted by receiver, messages flowing
sender -> receiver, self-loops already included (``recgoat_jax.graph.knn.knn_graph``). When the
edge set is symmetric and its reverse-edge permutation is given (``reverse`` [E], built once on
host by ``recgoat_jax.graph.sparse.reverse_edges``; the kNN graphs are symmetrised), the
attention-weighted aggregation runs as one CSR product per head, forward and backward
(`attention_aggregate`), instead of materialising the [E, d] messages and scatter-adding them.
Parameter names and initialisations match the PyTorch reference so that a converter can map
``fc.weight`` -> ``kernel`` (transposed), ``attn_l``/``attn_r`` [1, H, d/H] -> [H, d/H],
``bias`` -> ``bias``, and ``proj.weight``/``proj.bias`` -> ``proj/kernel`` (transposed) /
``proj/bias``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from recgoat_jax.graph.partition_gat import PartitionedEdges, partitioned_attention
from recgoat_jax.graph.sparse import csr_matmul, row_pointers, segment_softmax
from recgoat_jax.layers import Dropout

# DGL GATConv.reset_parameters uses nn.init.calculate_gain("relu").
_RELU_GAIN = math.sqrt(2.0)


def xavier_normal_torch(gain: float, fan_in: int, fan_out: int) -> Callable:
    """torch.nn.init.xavier_normal_ with explicit fans: N(0, (gain * sqrt(2 / (fan_in + fan_out)))^2).

    Explicit fans because torch computes them from its own layout (a [1, H, d/H] attention
    vector has fan_in = H * d/H, fan_out = d/H), which differs from the [H, d/H] layout here.
    """
    stddev = gain * math.sqrt(2.0 / (fan_in + fan_out))

    def init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
        return stddev * jax.random.normal(key, shape, dtype)

    return init


def torch_linear_bias_init(fan_in: int) -> Callable:
    """PyTorch ``nn.Linear`` default bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


@jax.custom_vjp
def attention_aggregate(attention: jax.Array, projected: jax.Array, senders: jax.Array,
                        indptr: jax.Array, receivers: jax.Array, reverse: jax.Array) -> jax.Array:
    """out[r, h] = sum over edges e = s -> r of attention[e, h] * projected[s, h].

    attention: [E, H]; projected: [N, H, d/H]; senders, receivers: [E] sorted by receiver;
    indptr: [N + 1] CSR row pointers; reverse: [E] the reverse of each edge (symmetric edge
    set). Returns [N, H, d/H]. Forward: one CSR product per head. Backward: the transpose is
    the same CSR structure with the attention read through `reverse` (one more product per
    head), and d attention[e, h] = <g[r, h], projected[s, h]> is a gather, a product and a
    [d, H] head-summing matmul (a reduction over the minor d/H axis runs several times
    slower on XLA's CPU backend).
    """
    return _aggregate(attention, projected, senders, indptr)


def _aggregate(attention, projected, senders, indptr):
    # heads leading ([H, E], [H, N, d/H]): one transpose each instead of a strided slice per head
    by_head = jnp.swapaxes(attention, 0, 1)
    tables = jnp.swapaxes(projected, 0, 1)
    return jnp.stack([csr_matmul(by_head[h], senders, indptr, tables[h])
                      for h in range(projected.shape[1])], axis=1)


def _aggregate_fwd(attention, projected, senders, indptr, receivers, reverse):
    out = _aggregate(attention, projected, senders, indptr)
    return out, (attention, projected, senders, indptr, receivers, reverse)


def _aggregate_bwd(residuals, g):
    attention, projected, senders, indptr, receivers, reverse = residuals
    n_nodes, heads, head_dim = projected.shape
    d_projected = _aggregate(attention[reverse], g, senders, indptr)
    head_sum = jnp.repeat(jnp.eye(heads, dtype=g.dtype), head_dim, axis=0)  # [d, H]
    products = (g.reshape(n_nodes, -1)[receivers] * projected.reshape(n_nodes, -1)[senders])
    d_attention = jnp.dot(products, head_sum, precision=jax.lax.Precision.HIGHEST)
    return d_attention, d_projected, None, None, None, None


attention_aggregate.defvjp(_aggregate_fwd, _aggregate_bwd)


# bf16 (or other) operands, f32 accumulation and result: the mixed-precision matmul.
_dot_f32 = functools.partial(jax.lax.dot_general, preferred_element_type=jnp.float32)

# PyTorch nn.Linear default weight init, kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_linear_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


class GATConv(nn.Module):
    """DGL ``GATConv(dim, dim // heads, heads, feat_drop, attn_drop, negative_slope,
    residual=False, activation=None, bias=True)``.

    Parameters: kernel [d, d], attn_l [H, d/H], attn_r [H, d/H], bias [d].
    `dtype`: operand dtype of the projection matmul (bf16 for mixed precision); the
    parameters, the attention softmax and the aggregation stay float32.
    """

    dim: int
    heads: int = 8
    feat_drop: float = 0.1
    attn_drop: float = 0.1
    negative_slope: float = 0.2
    dtype: Any = jnp.float32
    mesh: Any = None  # the 1-D device mesh of partitioned edges (`PartitionedEdges`)

    @nn.compact
    def __call__(
        self, h: jax.Array, senders: jax.Array | PartitionedEdges, receivers: jax.Array | None,
        deterministic: bool, reverse: jax.Array | None = None,
    ) -> jax.Array:
        """h: [N, d] node features; senders, receivers: [E] int, sorted by receiver, every node
        with at least one incoming edge (self-loops); reverse: [E] reverse-edge permutation of a
        symmetric edge set (the CSR aggregation) or None (gather + segment sum). Returns [N, d].
        Partitioned over `mesh` (``train.sharding = "graph"``): h [N R, d] sharded by rows,
        senders the `PartitionedEdges`, receivers None (`partitioned_attention`)."""
        if self.dim % self.heads:
            raise ValueError(f"GATConv: dim={self.dim} must be divisible by heads={self.heads}")
        if h.ndim != 2 or h.shape[1] != self.dim:
            raise ValueError(f"GATConv: expected node features [N, {self.dim}], got {h.shape}")
        n_nodes = h.shape[0]
        head_dim = self.dim // self.heads
        kernel = self.param(
            "kernel", xavier_normal_torch(_RELU_GAIN, self.dim, self.dim), (self.dim, self.dim)
        )
        attention_init = xavier_normal_torch(_RELU_GAIN, fan_in=self.dim, fan_out=head_dim)
        attn_l = self.param("attn_l", attention_init, (self.heads, head_dim))
        attn_r = self.param("attn_r", attention_init, (self.heads, head_dim))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.dim,))

        h = Dropout(self.feat_drop)(h, deterministic=deterministic)
        projected = jnp.matmul(h.astype(self.dtype), kernel.astype(self.dtype),
                               preferred_element_type=jnp.float32)
        projected = projected.reshape(n_nodes, self.heads, head_dim)  # [N, H, d/H]
        if isinstance(senders, PartitionedEdges):
            # the same submodule (auto-named Dropout_1) as below: the same key, so the mask
            # `partitioned_attention` draws per edge is the unpartitioned layer's
            drop = Dropout(self.attn_drop)
            off = deterministic or (isinstance(self.attn_drop, (int, float))
                                    and self.attn_drop == 0.0)
            attend = partitioned_attention(self.mesh, self.mesh.axis_names[0],
                                           self.negative_slope)
            aggregated = attend(projected, attn_l, attn_r, senders,
                                None if off else drop.rng(), 1.0 - self.attn_drop)
            return aggregated.reshape(n_nodes, self.dim) + bias
        score_src = jnp.sum(projected * attn_l, axis=-1)  # [N, H]
        score_dst = jnp.sum(projected * attn_r, axis=-1)  # [N, H]
        logits = nn.leaky_relu(score_src[senders] + score_dst[receivers], self.negative_slope)  # [E, H]
        attention = segment_softmax(logits, receivers, n_nodes)  # [E, H]
        attention = Dropout(self.attn_drop)(attention, deterministic=deterministic)
        if reverse is None:
            messages = projected[senders] * attention[..., None]  # [E, H, d/H]
            aggregated = jax.ops.segment_sum(messages, receivers, n_nodes, indices_are_sorted=True)
        else:
            aggregated = attention_aggregate(attention, projected, senders,
                                             row_pointers(receivers, n_nodes), receivers, reverse)
        return aggregated.reshape(n_nodes, self.dim) + bias


class FeatureTable(NamedTuple):
    """A constant feature table x: [I, f] with a row-major copy of its transpose x_t: [f, I].

    The projection's kernel gradient x^T g then runs as a plain product: XLA's CPU matmul
    with a transposed operand ran at 48 against 170 GFLOP/s on the [7050, 4096] image
    features (a standalone product on the 2-core CPU of benchmarks/results). Built on CPU
    only (`feature_table`).
    """

    x: jax.Array
    x_t: jax.Array


def feature_table(x: np.ndarray) -> FeatureTable | jax.Array:
    """x [I, f] as a `FeatureTable` on the CPU backend, as a plain array elsewhere (GPU and
    TPU matmuls read transposed operands at full rate: the copy would only take memory)."""
    if jax.default_backend() != "cpu":
        return jnp.asarray(x)
    return FeatureTable(jnp.asarray(x), jnp.asarray(np.ascontiguousarray(np.asarray(x).T)))


@jax.custom_vjp
def _project_table(x, x_t, kernel, bias):
    return jnp.matmul(x, kernel) + bias


def _project_table_fwd(x, x_t, kernel, bias):
    return _project_table(x, x_t, kernel, bias), x_t


def _project_table_bwd(x_t, g):
    return None, None, jnp.matmul(x_t, g), jnp.sum(g, axis=0)  # features are constants


_project_table.defvjp(_project_table_fwd, _project_table_bwd)


class Projection(nn.Module):
    """``nn.Dense(dim)`` with PyTorch's default init (parameters ``kernel`` [f, d], ``bias``
    [d]) on features given as an array or a `FeatureTable` (float32: the kernel gradient from
    the stored transpose). `dtype`: operand dtype of the matmul, f32 accumulation and result."""

    dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array | FeatureTable) -> jax.Array:
        table = x if isinstance(x, FeatureTable) else None
        rows = table.x if table is not None else x
        if rows.ndim != 2:
            raise ValueError(f"ModalityBranch: expected features [I, in_m], got shape {rows.shape}")
        kernel = self.param("kernel", torch_linear_kernel_init, (rows.shape[1], self.dim))
        bias = self.param("bias", torch_linear_bias_init(rows.shape[1]), (self.dim,))
        if table is not None and self.dtype == jnp.float32:
            return _project_table(table.x, table.x_t, kernel, bias)
        rows, kernel, bias = (a.astype(self.dtype) for a in (rows, kernel, bias))
        return (_dot_f32(rows, kernel, (((1,), (0,)), ((), ()))) + bias).astype(jnp.float32)


class ModalityBranch(nn.Module):
    """One modality's item branch: ``proj`` = Linear(in_m -> d) with PyTorch default init, then
    ``n_layers`` GATConv layers ``gat_0``, ``gat_1``, ..., each followed by LeakyReLU(0.2) and
    Dropout(dropout). `dtype`: operand dtype of the matmuls (bf16 for mixed precision); the
    parameters and every result stay float32."""

    dim: int
    dtype: Any = jnp.float32
    n_layers: int = 1
    heads: int = 8
    feat_drop: float = 0.1
    attn_drop: float = 0.1
    dropout: float = 0.1
    mesh: Any = None  # as `GATConv`: set when the edges are `PartitionedEdges`

    @nn.compact
    def __call__(self, x: jax.Array | FeatureTable, senders: jax.Array | PartitionedEdges,
                 receivers: jax.Array | None, deterministic: bool,
                 reverse: jax.Array | None = None) -> jax.Array:
        """x: [I, in_m] raw item features (or their `FeatureTable`); senders, receivers: [E] kNN edges with self-loops,
        sorted by receiver; reverse: [E] or None, as `GATConv`. Returns z_m: [I, d]."""
        h = Projection(self.dim, self.dtype, name="proj")(x)
        for layer in range(self.n_layers):
            h = GATConv(self.dim, self.heads, self.feat_drop, self.attn_drop, dtype=self.dtype,
                        mesh=self.mesh, name=f"gat_{layer}")(h, senders, receivers, deterministic, reverse)
            h = nn.leaky_relu(h, 0.2)
            h = Dropout(self.dropout)(h, deterministic=deterministic)
        return h
