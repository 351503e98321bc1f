"""Training losses: BPR, L2 regularisation, InfoNCE and the two contrastive objectives.

Every loss takes a ``mask`` [B] (bool) so that the last, partial batch of an epoch keeps the
static batch shape: padded rows contribute nothing, and in-batch negatives never include them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


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


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Rows divided by max(||row||, eps), as torch.nn.functional.normalize."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def infonce(a: jax.Array, b: jax.Array, temperature: float, mask: jax.Array,
            block: int = 0) -> jax.Array:
    """In-batch InfoNCE: mean_r -log softmax_s(<â_r, b̂_s> / tau)[r] over valid rows.

    a, b: [B, d] (L2-normalised here). mask: [B]; invalid rows are neither anchors nor negatives.
    block > 0 computes the [B, B] logits in row blocks with rematerialisation, so neither the
    forward nor the backward pass ever holds the whole matrix (same values, less memory).
    """
    a = l2_normalize(a) / temperature
    b = l2_normalize(b)
    col_bias = jnp.where(mask, 0.0, -jnp.inf).astype(a.dtype)
    positive = jnp.sum(a * b, axis=-1)

    def block_lse(a_rows):
        return jax.nn.logsumexp(a_rows @ b.T + col_bias, axis=-1)

    n = a.shape[0]
    if block <= 0 or block >= n:
        lse = block_lse(a)
    else:
        pad = (-n) % block
        a_blocks = jnp.pad(a, ((0, pad), (0, 0))).reshape(-1, block, a.shape[1])
        lse = jax.lax.map(jax.checkpoint(block_lse), a_blocks).reshape(-1)[:n]
    return masked_mean(lse - positive, mask)


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
    """
    names = sorted(modal)
    pairs = [(cf, modal[m]) for m in names]
    pairs += [(modal[m1], modal[m2]) for i, m1 in enumerate(names) for m2 in names[i + 1:]]
    terms = [1.0 - infonce(a[s], b[s], temperature, mask, block)
             for a, b in pairs for s in (0, 1)]
    user_item = infonce(z_user, fused_pos, temperature, mask, block)
    if not terms:
        return user_item
    return (1.0 - weight) * user_item + weight * sum(terms) / len(terms)


def cmcl(z_user: jax.Array, fused_pos: jax.Array, modal_pos: dict[str, jax.Array],
         weight: float, temperature: float, mask: jax.Array, block: int = 0) -> jax.Array:
    """The paper's cross-modal contrastive loss: each modality against the unified embedding.

    (1 - w) InfoNCE(z_user, fused_pos) + w * mean_m InfoNCE(z^m_pos, fused_pos), where
    L^m_i = -log exp(<z^m_i, z_i>/tau) / sum_j exp(<z^m_i, z_j>/tau).
    """
    user_item = infonce(z_user, fused_pos, temperature, mask, block)
    if not modal_pos:
        return user_item
    modal = sum(infonce(z, fused_pos, temperature, mask, block) for z in modal_pos.values())
    return (1.0 - weight) * user_item + weight * modal / len(modal_pos)
