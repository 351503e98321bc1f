"""Transport cost between embedding DIMENSIONS of a modality and of the ID (collaborative) side.

RecGOAT's OAT fusion (REFERENCE.md section 3, step 3) moves mass between the d feature
dimensions, not between items:

    C[p, q] = scale * mean_i (z_m[i, p] - z_cf[i, q])^2          C: [d, d]

The reference materialises the [I, d, d] difference tensor (18 GB per modality at d = 800 on
Baby, REFERENCE.md section 7 defect 1). `feature_cost` computes the same matrix from first and
second moments in O(I d^2) time and O(I d + d^2) memory.
"""

from __future__ import annotations

import jax.numpy as jnp


def row_weights(n_rows: int, mask: jnp.ndarray | None, dtype,
                caller: str = "feature_cost") -> jnp.ndarray:
    """Weights [n_rows] that sum to 1 over the rows kept by `mask` (all rows when it is None;
    all 0 when it keeps none). `caller` names the function in the shape error."""
    if mask is None:
        return jnp.full((n_rows,), 1.0 / n_rows, dtype)
    if mask.shape != (n_rows,):
        raise ValueError(f"{caller}: mask must have shape ({n_rows},), got {mask.shape}")
    w = mask.astype(dtype)
    total = jnp.sum(w)
    return jnp.where(total > 0, w / jnp.where(total > 0, total, 1.0), 0.0)  # no row kept: 0


def _check_pair(z_m: jnp.ndarray, z_cf: jnp.ndarray) -> None:
    if z_m.ndim != 2 or z_m.shape != z_cf.shape:
        raise ValueError("feature_cost: z_m and z_cf must both be [I, d] with the same shape, "
                         f"got {z_m.shape} and {z_cf.shape}")


def feature_cost(z_m: jnp.ndarray, z_cf: jnp.ndarray, scale: float = 100.0,
                 mask: jnp.ndarray | None = None) -> jnp.ndarray:
    """Dimension-to-dimension cost, closed form; equals `feature_cost_broadcast`.

    Args:
      z_m: [I, d] modality embeddings of the items.
      z_cf: [I, d] ID (collaborative) embeddings of the same items.
      scale: the reference multiplies by 100.
      mask: optional [I] bool/0-1 weights: the mean runs over the kept rows only (padding).

    Returns:
      [d, d] cost, C[p, q] = scale * mean_i (z_m[i, p] - z_cf[i, q])^2, >= 0.

    The textbook expansion mean(x^2)[p] + mean(y^2)[q] - 2 mean(x y)[p, q] cancels badly in
    float32 when the columns have large means (image embeddings do). We expand around the
    (weighted) column means instead, which is algebraically identical:

        mean_i (x_p - y_q)^2 = (mx_p - my_q)^2 + var(x_p) + var(y_q) - 2 cov(x_p, y_q),

    and clamp at 0 the tiny negatives that the remaining cancellation can leave.
    """
    _check_pair(z_m, z_cf)
    w = row_weights(z_m.shape[0], mask, z_m.dtype)
    mean_m = w @ z_m  # [d]
    mean_cf = w @ z_cf  # [d]
    centred_m = z_m - mean_m
    centred_cf = z_cf - mean_cf
    var_m = w @ (centred_m * centred_m)  # [d]
    var_cf = w @ (centred_cf * centred_cf)  # [d]
    cov = (centred_m * w[:, None]).T @ centred_cf  # [d, d]
    mean_gap = mean_m[:, None] - mean_cf[None, :]
    cost = mean_gap * mean_gap + var_m[:, None] + var_cf[None, :] - 2.0 * cov
    return scale * jnp.maximum(cost, 0.0)


def feature_cost_broadcast(z_m: jnp.ndarray, z_cf: jnp.ndarray, scale: float = 100.0,
                           mask: jnp.ndarray | None = None) -> jnp.ndarray:
    """The reference's form through the [I, d, d] difference tensor. Tests/benchmarks only.

    Args/returns as `feature_cost`; memory O(I d^2).
    """
    _check_pair(z_m, z_cf)
    w = row_weights(z_m.shape[0], mask, z_m.dtype)
    diff = z_m[:, :, None] - z_cf[:, None, :]  # [I, d, d]
    return scale * jnp.einsum("i,ipq->pq", w, diff * diff)
