"""Distribution-level OT loss between a modality's item embeddings and the ID embeddings.

The paper bounds the target error by a W1(P_m, Q) term that OAT is meant to shrink, but the
public code never adds any OT term to the loss (REFERENCE.md section 7 defect 3). `ot_loss`
is that term on a batch: the batch's items as two point clouds, x = modality embeddings and
y = ID embeddings, each item carrying mass 1/B (padded rows carry none).

It runs a fixed number of log-domain Sinkhorn iterations (`min_iterations == max_iterations`,
a `lax.scan`, STACK.md) so its cost inside a jit-compiled training step is known in advance;
gradients use ott's implicit differentiation of the converged potentials (with the ridge of
`recgoat_jax.ot.plan.implicit_diff`, which keeps its linear solve finite in float32).

Cost per step: each Sinkhorn solve touches the [B, B] cost matrix once per iteration, and the
divergence solves three problems; at B = 4096 that is 3 x iterations x 16.7M log-sum-exp
terms. `epsilon` is absolute, so it should match the scale of the embeddings (e.g. pass
L2-normalised rows, whose squared distances lie in [0, 4]).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from ott.geometry import costs, pointcloud
from ott.problems.linear import linear_problem
from ott.solvers.linear import sinkhorn
from ott.tools import sinkhorn_divergence

from recgoat_jax.ot.cost import row_weights
from recgoat_jax.ot.plan import implicit_diff

KINDS = ("sinkhorn_divergence", "entropic")
COSTS = {"sqeuclidean": costs.SqEuclidean, "euclidean": costs.Euclidean}


def ot_loss(x: jnp.ndarray, y: jnp.ndarray, kind: str, epsilon: float,
            mask: jnp.ndarray | None = None, *, iterations: int = 50,
            cost: str = "sqeuclidean") -> jnp.ndarray:
    """Entropic OT loss between two weighted point clouds of the same batch.

    Args:
      x: [B, d] modality embeddings of the batch's items.
      y: [B, d] ID embeddings of the same items (their order does not matter to the loss).
      kind: "sinkhorn_divergence" (debiased: 0 for identical clouds, >= 0) or "entropic"
        (the regularised OT cost <P, C> + eps KL(P | a b^T), a and b the row weights; biased,
        not 0 for identical clouds).
      epsilon: entropic regularisation, in the units of the cost.
      mask: optional [B] bool; False rows (padding) carry zero mass and get zero gradient.
      iterations: fixed Sinkhorn iteration count per solve (a multiple of 10 is exact).
      cost: "sqeuclidean" (smooth; default) or "euclidean" (the paper's W1 ground cost).

    Returns:
      scalar loss, differentiable in x and y.
    """
    if kind not in KINDS:
        raise ValueError(f"ot_loss: kind must be one of {KINDS}, got {kind!r}")
    if cost not in COSTS:
        raise ValueError(f"ot_loss: cost must be one of {tuple(COSTS)}, got {cost!r}")
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(f"ot_loss: x and y must both be [B, d], got {x.shape} and {y.shape}")
    if not epsilon > 0:
        raise ValueError(f"ot_loss: epsilon must be > 0, got {epsilon!r}")
    if iterations < 1:
        raise ValueError(f"ot_loss: iterations must be >= 1, got {iterations}")
    with jax.named_scope("ot_loss"):  # names its ops in profiles (benchmarks/step_profile.py)
        weights = row_weights(x.shape[0], mask, x.dtype, caller="ot_loss")
        solver_kwargs = {"max_iterations": iterations, "min_iterations": iterations,
                         "inner_iterations": 10 if iterations % 10 == 0 else 1,
                         "implicit_diff": implicit_diff(x.shape[0], balanced=True)}
        if kind == "sinkhorn_divergence":
            value, _ = sinkhorn_divergence.sinkhorn_divergence(
                pointcloud.PointCloud, x, y, cost_fn=COSTS[cost](), epsilon=epsilon,
                a=weights, b=weights, solve_kwargs=solver_kwargs)
            return value
        geom = pointcloud.PointCloud(x, y, cost_fn=COSTS[cost](), epsilon=epsilon)
        problem = linear_problem.LinearProblem(geom, a=weights, b=weights)
        return sinkhorn.Sinkhorn(**solver_kwargs)(problem).reg_ot_cost
