"""The reference's transport solver: kernel-domain Sinkhorn, fixed iteration count.

Reproduces, operation for operation, what the public RecGOAT computes (REFERENCE.md section 3):

    K = exp(-C / eps);  u = v = 1/d
    repeat n times:  u = mu / (K v + 1e-8);  v = nu / (K^T u + 1e-8)
    T = diag(u) K diag(v),          mu = nu = 1/d (uniform)

including its failure mode (REFERENCE.md section 7 defect 2): at cost scale 100 and eps 0.01,
exp(-C/eps) underflows once embedding entries have a standard deviation of about 0.05 or more,
and T comes out all zeros. That is deliberate: this solver is the reference; use the
log-domain ott solver ("ott" in `recgoat_jax.ot.plan`) to avoid the underflow.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

GUARD = 1e-8  # the reference's additive guard in both divisions


def kernel_sinkhorn(cost: jnp.ndarray, epsilon: float, iterations: int,
                    differentiable: bool = False) -> jnp.ndarray:
    """Kernel-domain Sinkhorn plan between uniform marginals.

    Args:
      cost: [n, m] cost matrix (the OAT cost is [d, d]).
      epsilon: entropic regularisation (the reference uses 0.01).
      iterations: exact number of (u, v) update pairs (the reference uses 100); static.
      differentiable: False (the reference, torch.no_grad) stops the gradient at the cost;
        True lets reverse-mode autodiff run through the unrolled loop.

    Returns:
      [n, m] plan T = diag(u) K diag(v); rows sum to 1/n when it converges, all zeros when
      the kernel underflows.
    """
    if cost.ndim != 2:
        raise ValueError(f"kernel_sinkhorn: cost must be [n, m], got shape {cost.shape}")
    if iterations < 0:
        raise ValueError(f"kernel_sinkhorn: iterations must be >= 0, got {iterations}")
    if not differentiable:
        cost = jax.lax.stop_gradient(cost)
    n, m = cost.shape
    mu = jnp.full((n,), 1.0 / n, cost.dtype)
    nu = jnp.full((m,), 1.0 / m, cost.dtype)
    kernel = jnp.exp(-cost / epsilon)

    def update(carry, _):
        _, v = carry
        u = mu / (kernel @ v + GUARD)
        v = nu / (kernel.T @ u + GUARD)
        return (u, v), None

    # u starts at 1/n as in the reference; it is overwritten before its first use.
    (u, v), _ = jax.lax.scan(update, (mu, nu), None, length=iterations)
    return u[:, None] * kernel * v[None, :]
