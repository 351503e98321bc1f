"""The OAT transport plan between embedding dimensions, dispatching on `OATConfig.solver`.

Solvers (`model.oat.solver`):
  "reference"  kernel-domain Sinkhorn exactly as the public RecGOAT (`kernel_sinkhorn`):
               `epsilon`, `iterations` (exact count); underflows at realistic scales.
  "ott"        ott-jax log-domain Sinkhorn: `epsilon`, `iterations` (= max_iterations),
               `threshold`, `min_iterations`, `momentum`, `anderson`, `epsilon_init` /
               `epsilon_decay` (epsilon schedule), `tau_a` / `tau_b` (unbalanced).
               `min_iterations == iterations` runs a fixed-length `lax.scan` instead of a
               `while_loop` with convergence checks; XLA compiles that far better inside a
               training step (STACK.md), at the price of never stopping early.
  "lowrank"    ott-jax low-rank Sinkhorn (`rank`, `iterations`, `threshold`,
               `min_iterations`, `tau_a` / `tau_b`). `epsilon` does not apply: the low-rank
               solver's own entropic term is left at ott's default (0).

Gradient through the plan (`model.oat.plan_grad`):
  "stop"      none (the reference computes the plan under torch.no_grad);
  "implicit"  ott implicit differentiation of the Sinkhorn fixed point ("ott" only);
  "unroll"    autodiff through the iterations (ott `implicit_diff=None`; for "reference" the
              unrolled kernel loop). Refused for "ott" with min_iterations == iterations: ott
              0.6.0 back-propagates its fixed-length scan in the wrong order.
  "lowrank" allows "stop" only: ott 0.6.0 has no implicit differentiation for it, and its
  unrolled backward fails on jax 0.10.

Plan scale (`model.oat.plan_scale`): "one" keeps the plan as solved (rows sum to 1/d, so
z_m @ T is ~1/d the scale of z_m, REFERENCE.md section 7 defect 2); "dim" multiplies by d, the
barycentric map whose rows sum to 1.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from ott.geometry import epsilon_scheduler, geometry
from ott.problems.linear import linear_problem
from ott.solvers.linear import acceleration, implicit_differentiation, sinkhorn, sinkhorn_lr

from recgoat_jax.config import ConfigError, OATConfig
from recgoat_jax.ot.kernel_sinkhorn import kernel_sinkhorn

SOLVERS = ("reference", "ott", "lowrank")
PLAN_GRADS = ("stop", "implicit", "unroll")
PLAN_SCALES = ("one", "dim")
_OTT_ONLY_DEFAULTS = {"momentum": 1.0, "anderson": 0, "epsilon_init": 0.0}
_FIELD = "model.oat."


def _require(ok: bool, field: str, expected: str, value) -> None:
    if not ok:
        raise ConfigError(f"{_FIELD}{field} must be {expected}, got {value!r}")


def validate_oat(cfg: OATConfig) -> None:
    """Raise ConfigError naming the `model.oat.*` field when the transport options are bad."""
    _require(cfg.solver in SOLVERS, "solver", f"one of {SOLVERS}", cfg.solver)
    _require(cfg.plan_grad in PLAN_GRADS, "plan_grad", f"one of {PLAN_GRADS}", cfg.plan_grad)
    _require(cfg.plan_scale in PLAN_SCALES, "plan_scale", f"one of {PLAN_SCALES}",
             cfg.plan_scale)
    _require(cfg.cost_scale > 0, "cost_scale", "> 0", cfg.cost_scale)
    _require(cfg.epsilon > 0, "epsilon", "> 0", cfg.epsilon)
    _require(cfg.iterations >= 1, "iterations", ">= 1", cfg.iterations)
    _require(cfg.threshold > 0, "threshold", "> 0", cfg.threshold)
    _require(0 <= cfg.min_iterations <= cfg.iterations, "min_iterations",
             f"between 0 and iterations ({cfg.iterations})", cfg.min_iterations)
    _require(0 < cfg.momentum < 2, "momentum", "in (0, 2) (1.0 = plain Sinkhorn)", cfg.momentum)
    _require(cfg.anderson >= 0, "anderson", ">= 0 (0 = off)", cfg.anderson)
    _require(0 < cfg.epsilon_decay <= 1, "epsilon_decay", "in (0, 1]", cfg.epsilon_decay)
    _require(cfg.epsilon_init >= 0, "epsilon_init", ">= 0 (<= epsilon: no schedule)",
             cfg.epsilon_init)
    _require(0 < cfg.tau_a <= 1, "tau_a", "in (0, 1] (1 = balanced)", cfg.tau_a)
    _require(0 < cfg.tau_b <= 1, "tau_b", "in (0, 1] (1 = balanced)", cfg.tau_b)
    _require(cfg.rank >= 1, "rank", ">= 1", cfg.rank)
    if cfg.solver == "reference":
        _require(cfg.plan_grad != "implicit", "plan_grad",
                 "'stop' or 'unroll' with solver 'reference' (implicit differentiation needs "
                 "solver 'ott')", cfg.plan_grad)
        for field in ("tau_a", "tau_b"):
            _require(getattr(cfg, field) == 1.0, field, "1.0 with solver 'reference' "
                     "(unbalanced transport needs solver 'ott' or 'lowrank')", getattr(cfg, field))
    if cfg.solver != "ott":  # options that would otherwise be silently ignored
        for field, default in _OTT_ONLY_DEFAULTS.items():
            _require(getattr(cfg, field) == default, field,
                     f"{default!r} with solver '{cfg.solver}' (it applies to solver 'ott' only)",
                     getattr(cfg, field))
    if cfg.solver == "lowrank":
        # ott has no implicit differentiation for low-rank Sinkhorn, and its unrolled backward
        # raises a CustomVJPException on jax 0.10 (nested custom_vjp over a closed-over value).
        _require(cfg.plan_grad == "stop", "plan_grad", "'stop' with solver 'lowrank' (ott 0.6.0 "
                 "can differentiate low-rank Sinkhorn neither implicitly nor unrolled)",
                 cfg.plan_grad)
    if cfg.solver == "ott" and cfg.plan_grad == "unroll":
        # ott 0.6.0's backward of the fixed-length scan (min_iterations == max_iterations)
        # visits the stored states in the wrong order (fixpoint_iter_bwd starts its scan at
        # iteration 0): gradients are wrong unless the solver had converged.
        _require(cfg.min_iterations < cfg.iterations, "min_iterations",
                 f"< iterations ({cfg.iterations}) when plan_grad = 'unroll' (ott 0.6.0 "
                 "differentiates its fixed-length scan incorrectly)", cfg.min_iterations)
    if cfg.anderson > 0:
        _require(cfg.momentum == 1.0, "momentum",
                 "1.0 when model.oat.anderson > 0 (ott drops momentum under Anderson)",
                 cfg.momentum)
        _require(cfg.plan_grad != "unroll", "plan_grad",
                 "'stop' or 'implicit' when model.oat.anderson > 0 (ott forces implicit "
                 "differentiation under Anderson acceleration)", cfg.plan_grad)


def _inner_iterations(iterations: int) -> int:
    # ott checks convergence every `inner_iterations` and runs max_iterations // inner of them,
    # so the block length must divide the budget for the budget to be exact.
    return math.gcd(10, iterations)


def _uniform_problem(geom: geometry.Geometry, cfg: OATConfig) -> linear_problem.LinearProblem:
    n, m = geom.shape
    a = jnp.full((n,), 1.0 / n, geom.dtype)
    b = jnp.full((m,), 1.0 / m, geom.dtype)
    return linear_problem.LinearProblem(geom, a, b, tau_a=cfg.tau_a, tau_b=cfg.tau_b)


def _epsilon(cfg: OATConfig):
    if cfg.epsilon_init > cfg.epsilon:
        # ott's `init` is a multiple of the target, ours is an absolute epsilon.
        return epsilon_scheduler.Epsilon(target=cfg.epsilon, init=cfg.epsilon_init / cfg.epsilon,
                                         decay=cfg.epsilon_decay)
    return cfg.epsilon


def implicit_diff(size: int, balanced: bool) -> implicit_differentiation.ImplicitDiff:
    """ott implicit differentiation that survives float32 and near-permutation plans.

    Args:
      size: the number of points on the first side (d for the OAT plan, B for a batch).
      balanced: tau_a == tau_b == 1.

    The balanced first-order system is singular along (f + c, g - c); in float32, with a plan
    close to a permutation (small epsilon, as the reference's 0.01 at cost scale 100), ott's
    default NormalCG then returns non-finite values and lineax raises at run time, killing the
    step. `ridge_kernel` (ott's remedy for that null space; balanced problems only) removes it
    without changing the gradient. 1/size gives the null direction an eigenvalue ~1, the scale
    of the rest of the (preconditioned) operator: 1.0 broke n = 500 point clouds and 1e-3 broke
    d = 64 plans in `benchmarks/ot_solvers.py`. Where the plan is a hard assignment and
    Sinkhorn has not converged (image-scale costs at epsilon 0.01) the solve can still fail:
    use plan_grad "unroll" or "stop" there, or a larger epsilon.
    """
    return implicit_differentiation.ImplicitDiff(
        solver_kwargs={"ridge_kernel": 1.0 / size} if balanced else None)


def ott_sinkhorn_solver(cfg: OATConfig, size: int) -> sinkhorn.Sinkhorn:
    """The configured ott `Sinkhorn` (lse mode) for solver "ott" on a [size, size] problem."""
    balanced = cfg.tau_a == 1.0 and cfg.tau_b == 1.0
    implicit = None if cfg.plan_grad == "unroll" else implicit_diff(size, balanced)
    return sinkhorn.Sinkhorn(
        lse_mode=True,
        threshold=cfg.threshold,
        max_iterations=cfg.iterations,
        min_iterations=cfg.min_iterations,
        inner_iterations=_inner_iterations(cfg.iterations),
        momentum=None if cfg.momentum == 1.0 else acceleration.Momentum(value=cfg.momentum),
        anderson=acceleration.AndersonAcceleration(memory=cfg.anderson) if cfg.anderson else None,
        implicit_diff=implicit,
    )


def ott_output(cost: jnp.ndarray, cfg: OATConfig):
    """The full ott output (`.matrix`, `.n_iters`, `.converged`, costs) for solver "ott" or
    "lowrank"; `transport_plan` takes its `.matrix`. No stop_gradient or plan scaling here.

    Args:
      cost: [n, m] cost matrix.
      cfg: `model.oat` options with `cfg.solver` in ("ott", "lowrank"); validated here.
    """
    validate_oat(cfg)
    if cfg.solver == "ott":
        geom = geometry.Geometry(cost_matrix=cost, epsilon=_epsilon(cfg))
        return ott_sinkhorn_solver(cfg, cost.shape[0])(_uniform_problem(geom, cfg))
    if cfg.solver != "lowrank":
        raise ValueError(f"ott_output: solver must be 'ott' or 'lowrank', got {cfg.solver!r}")
    if cfg.rank > min(cost.shape):
        raise ConfigError(f"{_FIELD}rank must be <= the embedding size {min(cost.shape)}, "
                          f"got {cfg.rank}")
    solver = sinkhorn_lr.LRSinkhorn(
        rank=cfg.rank, threshold=cfg.threshold, max_iterations=cfg.iterations,
        min_iterations=cfg.min_iterations, inner_iterations=_inner_iterations(cfg.iterations))
    return solver(_uniform_problem(geometry.Geometry(cost_matrix=cost), cfg))


def transport_plan(cost: jnp.ndarray, cfg: OATConfig) -> jnp.ndarray:
    """Entropic transport plan between the dimensions of two embedding tables.

    Args:
      cost: [d, d] cost from `feature_cost` (scale `cfg.cost_scale` already applied).
      cfg: the `model.oat` options (validated here; errors name the field).

    Returns:
      [d, d] plan; rows sum to 1/d ("one") or 1 ("dim") when the solver converged and the
      problem is balanced. The reference solver returns all zeros when its kernel underflows;
      `plan_diagnostics` detects that.
    """
    validate_oat(cfg)
    if cost.ndim != 2 or cost.shape[0] != cost.shape[1]:
        raise ValueError(f"transport_plan: cost must be a square [d, d] matrix, got {cost.shape}")
    if cfg.plan_grad == "stop":
        cost = jax.lax.stop_gradient(cost)
    if cfg.solver == "reference":
        plan = kernel_sinkhorn(cost, cfg.epsilon, cfg.iterations,
                               differentiable=cfg.plan_grad == "unroll")
    else:
        plan = ott_output(cost, cfg).matrix
    if cfg.plan_scale == "dim":
        plan = plan * cost.shape[0]
    return plan


def plan_diagnostics(plan: jnp.ndarray, cfg: OATConfig) -> dict[str, jnp.ndarray]:
    """Health of a plan from `transport_plan`, as jit-friendly scalars.

    Args:
      plan: [d, d] plan.
      cfg: the options it was computed with (for the expected row/column sums).

    Returns:
      row_error, col_error: max |row (column) sum - target|, target 1/d ("one") or 1 ("dim");
        for unbalanced problems (tau < 1) a nonzero error is expected;
      mass: total mass (1 for "one", d for "dim" when converged);
      all_zero: bool, the mass is below 1e-6 of the target (the kernel underflowed);
      has_nan: bool, some entry is NaN or infinite.
    """
    n, m = plan.shape
    row_target = 1.0 if cfg.plan_scale == "dim" else 1.0 / n
    col_target = n / m if cfg.plan_scale == "dim" else 1.0 / m
    mass = jnp.sum(plan)
    return {
        "row_error": jnp.max(jnp.abs(jnp.sum(plan, axis=1) - row_target)),
        "col_error": jnp.max(jnp.abs(jnp.sum(plan, axis=0) - col_target)),
        "mass": mass,
        "all_zero": mass < 1e-6 * row_target * n,
        "has_nan": jnp.logical_not(jnp.all(jnp.isfinite(plan))),
    }
