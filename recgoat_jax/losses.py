"""Training losses: BPR, L2 regularisation, InfoNCE and the two contrastive objectives.

Every loss takes a ``mask`` [B] (bool) so that the last, partial batch of an epoch keeps the
static batch shape: padded rows contribute nothing, and in-batch negatives never include them.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of x [B] over rows where mask [B] is True."""
    mask = mask.astype(x.dtype)
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def bpr(pos_scores: jax.Array, neg_scores: jax.Array, mask: jax.Array) -> jax.Array:
    """-mean log sigmoid(s_pos - s_neg).  pos_scores, neg_scores: [B]."""
    return masked_mean(jax.nn.softplus(neg_scores - pos_scores), mask)


def l2_reg(mask: jax.Array, *rows: jax.Array) -> jax.Array:
    """Mean over the batch of the summed squared norms of each row set ([B, d] each)."""
    sq = sum(jnp.sum(jnp.square(r), axis=-1) for r in rows)
    return masked_mean(sq, mask)


def bpr_with_l2(z_user: jax.Array, z_item: jax.Array, ids: dict, users: jax.Array,
                pos: jax.Array, neg: jax.Array, mask: jax.Array,
                decay: float) -> tuple[jax.Array, dict]:
    """BPR on the final embeddings + decay * L2 of the batch's layer-0 (ID) embeddings.

    z_user [U, d], z_item [I, d]: the embeddings scored; ids: {"embedding_user" [U, d],
    "embedding_item" [I, d]} the layer-0 tables; users, pos, neg, mask: [B] the batch.
    Returns (bpr + decay * reg, {"bpr": bpr, "reg": reg}).
    """
    with jax.named_scope("bpr"):
        zu = z_user[users]
        loss = bpr(jnp.sum(zu * z_item[pos], -1), jnp.sum(zu * z_item[neg], -1), mask)
        reg = l2_reg(mask, ids["embedding_user"][users], ids["embedding_item"][pos],
                     ids["embedding_item"][neg])
        return loss + decay * reg, {"bpr": loss, "reg": reg}


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Rows divided by max(||row||, eps), as torch.nn.functional.normalize."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def _block_rows(x: jax.Array, block: int) -> jax.Array:
    """[n, ...] -> [ceil(n / block), block, ...], zero-padded."""
    pad = (-x.shape[0]) % block
    return jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1)).reshape(-1, block, *x.shape[1:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def blocked_logsumexp(a: jax.Array, b: jax.Array, col_bias: jax.Array, block: int) -> jax.Array:
    """lse[r] = logsumexp_s(<a_r, b_s> + col_bias[s]) computed `block` rows at a time.

    a: [n, d], b: [m, d], col_bias: [m] (0 or -inf) -> [n]. Neither pass materialises the
    [n, m] matrix: the forward keeps only lse, and the backward rebuilds each block's softmax
    from it (one matmul and one exp per block, as flash attention does), so the whole
    contrastive term stays in cache on a CPU and in on-chip memory on an accelerator.
    """
    return _blocked_lse_fwd(a, b, col_bias, block)[0]


def _blocked_lse_fwd(a, b, col_bias, block):
    lse = jax.lax.map(lambda rows: jax.nn.logsumexp(rows @ b.T + col_bias, axis=-1),
                      _block_rows(a, block)).reshape(-1)[: a.shape[0]]
    return lse, (a, b, col_bias, lse)


def _blocked_lse_bwd(block, residuals, g):
    a, b, col_bias, lse = residuals
    # d lse[r] / d logits[r, s] = softmax P[r, s]; with the cotangent g: grad_a = (g P) @ b and
    # grad_b = (g P)^T @ a. Each pass rebuilds its blocks of g P from lse. The second pass
    # builds P's column blocks already transposed (from b_blk @ a^T) instead of multiplying by
    # P^T: one more [block, n] matmul, but XLA's CPU product with a transposed [B, B] operand
    # ran at a third of the rate of the plain one (53 against 186 GFLOP/s at B = 4096, d = 64).

    def row_block(xs):
        rows, lse_rows, g_rows = xs
        p = jnp.exp(rows @ b.T + col_bias - lse_rows[:, None]) * g_rows[:, None]  # [block, m]
        return p @ b

    def column_block(xs):
        cols, bias_cols = xs
        p_t = jnp.exp(cols @ a.T + bias_cols[:, None] - lse[None, :]) * g[None, :]  # [block, n]
        return p_t @ a

    grad_a = jax.lax.map(row_block, (_block_rows(a, block), _block_rows(lse, block),
                                     _block_rows(g, block)))
    grad_b = jax.lax.map(column_block, (_block_rows(b, block), _block_rows(col_bias, block)))
    return (grad_a.reshape(-1, a.shape[1])[: a.shape[0]],
            grad_b.reshape(-1, b.shape[1])[: b.shape[0]], jnp.zeros_like(col_bias))


blocked_logsumexp.defvjp(_blocked_lse_fwd, _blocked_lse_bwd)


def infonce(a: jax.Array, b: jax.Array, temperature: float, mask: jax.Array,
            block: int = 0) -> jax.Array:
    """In-batch InfoNCE: mean_r -log softmax_s(<â_r, b̂_s> / tau)[r] over valid rows.

    a, b: [B, d] (L2-normalised here). mask: [B]; invalid rows are neither anchors nor negatives.
    block > 0 computes the [B, B] logits in row blocks (`blocked_logsumexp`): same values, and
    neither pass ever holds the whole matrix.
    """
    with jax.named_scope("infonce"):  # names its ops in profiles (benchmarks/step_profile.py)
        a = l2_normalize(a) / temperature
        b = l2_normalize(b)
        col_bias = jnp.where(mask, 0.0, -jnp.inf).astype(a.dtype)
        positive = jnp.sum(a * b, axis=-1)
        if block <= 0 or block >= a.shape[0]:
            lse = jax.nn.logsumexp(a @ b.T + col_bias, axis=-1)
        else:
            lse = blocked_logsumexp(a, b, col_bias, block)
        return masked_mean(lse - positive, mask)


class Gathered(NamedTuple):
    """Batch rows gathered from a table: ``rows = table[ids]``.

    table: [n, d]; ids: [B] (int). Rows with the same id are the same vector, which lets
    `infonce` compute each distinct row once (`infonce_gathered`).
    """

    table: jax.Array
    ids: jax.Array

    @property
    def rows(self) -> jax.Array:
        """[B, d]."""
        return self.table[self.ids]


DATA_AXIS = "data"  # recgoat_jax.train.parallel.DATA_AXIS (not imported: train imports losses)


def _data_shards() -> int:
    """Devices the batch is split over: the size of the "data" axis of the mesh the trainer
    traces under (`jax.sharding.use_abstract_mesh`) when XLA places it (Auto), else 1."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or DATA_AXIS not in mesh.axis_names:
        return 1
    if mesh.axis_types[mesh.axis_names.index(DATA_AXIS)] != jax.sharding.AxisType.Auto:
        return 1  # inside shard_map (the sweep engine's member axis): already per device
    return mesh.shape[DATA_AXIS]


def _distinct(ids: jax.Array, n: int, shards: int) -> tuple[jax.Array, jax.Array, int]:
    """(distinct ids [K], index of each batch row among them [B], K) with the static
    K = min(B, n) rounded up to a multiple of `shards`: unused slots repeat an id, and no
    batch row points at them."""
    k = -(-min(ids.shape[0], n) // shards) * shards
    distinct, inverse = jnp.unique(ids, size=k, fill_value=0, return_inverse=True)
    return distinct, inverse.reshape(-1), k


def infonce_gathered(a: Gathered, b: Gathered, temperature: float, mask: jax.Array,
                     block: int = 0) -> jax.Array:
    """`infonce` of a.rows against b.rows, computed over the distinct rows only.

    A batch of B rows drawn from a table of n < B rows repeats rows, and so does the [B, B]
    logit matrix: equal columns enter every row's logsumexp once per batch row that holds
    them, and equal rows have equal logsumexps. This computes the [K_a, K_b] logits of the
    distinct ids (K = min(B, n), static) with each column biased by log(its count among the
    valid rows): the same loss and gradients up to float rounding, at K_a K_b / B^2 of the
    cost (ML-100K at B = 4096: 943 x 1682 against 4096 x 4096). With neither table smaller
    than the batch nothing repeats for sure, and this is plain `infonce` of the rows.
    Data-parallel (traced under the mesh, see `_data_shards`), the distinct anchor rows are
    split over the devices as the batch rows would be.
    """
    batch = a.ids.shape[0]
    if a.table.shape[0] >= batch and b.table.shape[0] >= batch:
        return infonce(a.rows, b.rows, temperature, mask, block)
    with jax.named_scope("infonce"):
        shards = _data_shards()
        ids_a, inv_a, k_a = _distinct(a.ids, a.table.shape[0], shards)
        ids_b, inv_b, k_b = _distinct(b.ids, b.table.shape[0], 1)
        if shards > 1:  # the distinct rows are not the batch's: split them as the batch is
            ids_a = jax.lax.with_sharding_constraint(ids_a, P(DATA_AXIS))
        a_rows = l2_normalize(a.table[ids_a]) / temperature  # [K_a, d]
        b_rows = l2_normalize(b.table[ids_b])  # [K_b, d]
        count = jnp.zeros(k_b, a_rows.dtype).at[inv_b].add(mask.astype(a_rows.dtype))
        col_bias = jnp.where(count > 0, jnp.log(jnp.maximum(count, 1.0)), -jnp.inf)
        if block <= 0 or block >= k_a:
            lse = jax.nn.logsumexp(a_rows @ b_rows.T + col_bias, axis=-1)
        else:
            lse = blocked_logsumexp(a_rows, b_rows, col_bias, block)
        positive = jnp.sum(a_rows[inv_a] * b_rows[inv_b], axis=-1)  # [B]
        return masked_mean(lse[inv_a] - positive, mask)


def _pair_infonce(a, b, temperature, mask, block):
    """InfoNCE of two row sets given as arrays [B, d] or as `Gathered` (then deduplicated)."""
    if isinstance(a, Gathered) and isinstance(b, Gathered):
        return infonce_gathered(a, b, temperature, mask, block)
    rows = [x.rows if isinstance(x, Gathered) else x for x in (a, b)]
    return infonce(*rows, temperature, mask, block)


def reference_contrastive(z_user: jax.Array, fused_pos: jax.Array,
                          cf: tuple[jax.Array, jax.Array],
                          modal: dict[str, tuple[jax.Array, jax.Array]],
                          weight: float, temperature: float, mask: jax.Array,
                          block: int = 0) -> jax.Array:
    """The public implementation's CL (REFERENCE.md section 4).

    (1 - w) InfoNCE(z_user, fused_pos) + w * mean over pairs and {pos, neg} of (1 - InfoNCE),
    pairs = (cf, m) for each modality m, then (m1, m2) for m1 < m2 (alphabetical: with image and
    text that is (cf, image), (cf, text), (image, text) as the reference). Note the modality
    terms *raise* InfoNCE (defect 4): kept as the reference does it.

    z_user, fused_pos: [B, d]; cf and modal[m]: (rows at the positive items, rows at the negatives).
    Each may also be a `Gathered` (table and batch ids): pairs of those skip repeated rows.
    """
    names = sorted(modal)
    pairs = [(cf, modal[m]) for m in names]
    pairs += [(modal[m1], modal[m2]) for i, m1 in enumerate(names) for m2 in names[i + 1:]]
    terms = [1.0 - _pair_infonce(a[s], b[s], temperature, mask, block)
             for a, b in pairs for s in (0, 1)]
    user_item = _pair_infonce(z_user, fused_pos, temperature, mask, block)
    if not terms:
        return user_item
    return (1.0 - weight) * user_item + weight * sum(terms) / len(terms)


def cmcl(z_user: jax.Array, fused_pos: jax.Array, modal_pos: dict[str, jax.Array],
         weight: float, temperature: float, mask: jax.Array, block: int = 0) -> jax.Array:
    """The paper's cross-modal contrastive loss: each modality against the unified embedding.

    (1 - w) InfoNCE(z_user, fused_pos) + w * mean_m InfoNCE(z^m_pos, fused_pos), where
    L^m_i = -log exp(<z^m_i, z_i>/tau) / sum_j exp(<z^m_i, z_j>/tau).
    Row sets are [B, d] arrays or `Gathered`, as in `reference_contrastive`.
    """
    user_item = _pair_infonce(z_user, fused_pos, temperature, mask, block)
    if not modal_pos:
        return user_item
    modal = sum(_pair_infonce(z, fused_pos, temperature, mask, block)
                for z in modal_pos.values())
    return (1.0 - weight) * user_item + weight * modal / len(modal_pos)
