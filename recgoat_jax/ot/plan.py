"""The OAT transport plan between embedding dimensions, dispatching on `PlanOptions.solver`.

Solvers (`PlanOptions.solver`, from the config's `model.oat.solver`):
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

Gradient through the plan (`plan_grad`):
  "stop"      none (the reference computes the plan under torch.no_grad);
  "implicit"  ott implicit differentiation of the Sinkhorn fixed point ("ott" only);
  "unroll"    autodiff through the iterations (ott `implicit_diff=None`; for "reference" the
              unrolled kernel loop). Refused for "ott" with min_iterations == iterations: ott
              0.6.0 back-propagates its fixed-length scan in the wrong order.
  "lowrank" allows "stop" only: ott 0.6.0 has no implicit differentiation for it, and its
  unrolled backward fails on jax 0.10.

Cost normalisation (`cost_norm`, ott and lowrank): "none" solves the cost as given, as the
reference; "max" / "mean" divide it by its largest / mean entry first, so epsilon is
relative to the cost's scale. In float32 a log-domain solve loses its marginals once the cost
spans ~1e7 epsilon: the default RecGOAT's image plan on `baby` (4,096-d features) did within
a few steps and its mass grew to 1e22 before the loss went NaN.

Plan scale (`plan_scale`): "one" keeps the plan as solved (rows sum to 1/d, so
z_m @ T is ~1/d the scale of z_m, REFERENCE.md section 7 defect 2); "dim" multiplies by d, the
barycentric map whose rows sum to 1.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from ott.geometry import epsilon_scheduler, geometry
from ott.problems.linear import linear_problem
from ott.solvers.linear import acceleration, implicit_differentiation, sinkhorn, sinkhorn_lr

from recgoat_jax.ot.kernel_sinkhorn import kernel_sinkhorn

SOLVERS = ("reference", "ott", "lowrank")
PLAN_GRADS = ("stop", "implicit", "unroll")
PLAN_SCALES = ("one", "dim")
# Cost normalisation before an ott solve: the cost divided by its max or mean entry (ott's
# Geometry scale_cost), so epsilon is relative to the cost's own scale.
COST_NORMS = {"none": 1.0, "max": "max_cost", "mean": "mean"}
_OTT_ONLY_DEFAULTS = {"momentum": 1.0, "anderson": 0, "epsilon_init": 0.0}


def _require(ok: bool, field: str, expected: str, value) -> None:
    if isinstance(ok, jax.core.Tracer):  # a traced value (a sweep member's own epsilon):
        return  # checked where it was still a number (when the config loaded)
    if not ok:
        raise ValueError(f"{field} must be {expected}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class PlanOptions:
    """How `transport_plan` solves: plain numbers and strings (the module docstring has them).

    Frozen and hashable, so it can be a static argument of `jax.jit`. Construction checks every
    option and raises ValueError naming the field (the field names are those of the
    `model.oat` config section, which `recgoat_jax.models.registry` translates into this).
    """

    solver: str = "reference"  # "reference" | "ott" | "lowrank"
    epsilon: float = 0.01
    iterations: int = 100  # reference: exact count; ott / lowrank: max_iterations
    threshold: float = 1e-3
    min_iterations: int = 0
    momentum: float = 1.0
    anderson: int = 0
    epsilon_init: float = 0.0
    epsilon_decay: float = 0.9
    tau_a: float = 1.0
    tau_b: float = 1.0
    rank: int = 4
    plan_grad: str = "stop"  # "stop" | "implicit" | "unroll"
    plan_scale: str = "one"  # "one" | "dim"
    cost_norm: str = "none"  # "none" | "max" | "mean" (ott and lowrank)

    def __post_init__(self):
        _require(self.solver in SOLVERS, "solver", f"one of {SOLVERS}", self.solver)
        _require(self.plan_grad in PLAN_GRADS, "plan_grad", f"one of {PLAN_GRADS}",
                 self.plan_grad)
        _require(self.plan_scale in PLAN_SCALES, "plan_scale", f"one of {PLAN_SCALES}",
                 self.plan_scale)
        _require(self.cost_norm in COST_NORMS, "cost_norm", f"one of {tuple(COST_NORMS)}",
                 self.cost_norm)
        _require(self.cost_norm == "none" or self.solver != "reference", "cost_norm",
                 "'none' with solver 'reference' (the kernel loop solves the cost as given)",
                 self.cost_norm)
        _require(self.epsilon > 0, "epsilon", "> 0", self.epsilon)
        _require(self.iterations >= 1, "iterations", ">= 1", self.iterations)
        _require(self.threshold > 0, "threshold", "> 0", self.threshold)
        _require(0 <= self.min_iterations <= self.iterations, "min_iterations",
                 f"between 0 and iterations ({self.iterations})", self.min_iterations)
        _require(0 < self.momentum < 2, "momentum", "in (0, 2) (1.0 = plain Sinkhorn)",
                 self.momentum)
        _require(self.anderson >= 0, "anderson", ">= 0 (0 = off)", self.anderson)
        _require(0 < self.epsilon_decay <= 1, "epsilon_decay", "in (0, 1]", self.epsilon_decay)
        _require(self.epsilon_init >= 0, "epsilon_init", ">= 0 (<= epsilon: no schedule)",
                 self.epsilon_init)
        _require(0 < self.tau_a <= 1, "tau_a", "in (0, 1] (1 = balanced)", self.tau_a)
        _require(0 < self.tau_b <= 1, "tau_b", "in (0, 1] (1 = balanced)", self.tau_b)
        _require(self.rank >= 1, "rank", ">= 1", self.rank)
        if self.solver == "reference":
            _require(self.plan_grad != "implicit", "plan_grad",
                     "'stop' or 'unroll' with solver 'reference' (implicit differentiation "
                     "needs solver 'ott')", self.plan_grad)
            for field in ("tau_a", "tau_b"):
                _require(getattr(self, field) == 1.0, field, "1.0 with solver 'reference' "
                         "(unbalanced transport needs solver 'ott' or 'lowrank')",
                         getattr(self, field))
        if self.solver != "ott":  # options that would otherwise be silently ignored
            for field, default in _OTT_ONLY_DEFAULTS.items():
                _require(getattr(self, field) == default, field,
                         f"{default!r} with solver '{self.solver}' (it applies to solver 'ott' "
                         "only)", getattr(self, field))
        if self.solver == "lowrank":
            # ott has no implicit differentiation for low-rank Sinkhorn, and its unrolled
            # backward raises a CustomVJPException on jax 0.10 (nested custom_vjp over a
            # closed-over value).
            _require(self.plan_grad == "stop", "plan_grad", "'stop' with solver 'lowrank' (ott "
                     "0.6.0 can differentiate low-rank Sinkhorn neither implicitly nor "
                     "unrolled)", self.plan_grad)
        if self.solver == "ott" and self.plan_grad == "unroll":
            # ott 0.6.0's backward of the fixed-length scan (min_iterations == max_iterations)
            # visits the stored states in the wrong order (fixpoint_iter_bwd starts its scan at
            # iteration 0): gradients are wrong unless the solver had converged.
            _require(self.min_iterations < self.iterations, "min_iterations",
                     f"< iterations ({self.iterations}) when plan_grad = 'unroll' (ott 0.6.0 "
                     "differentiates its fixed-length scan incorrectly)", self.min_iterations)
        if self.anderson > 0:
            _require(self.momentum == 1.0, "momentum",
                     "1.0 when anderson > 0 (ott drops momentum under Anderson)", self.momentum)
            _require(self.plan_grad != "unroll", "plan_grad",
                     "'stop' or 'implicit' when anderson > 0 (ott forces implicit "
                     "differentiation under Anderson acceleration)", self.plan_grad)


def _check_options(options) -> None:
    if not isinstance(options, PlanOptions):
        raise ValueError(f"expected a recgoat_jax.ot.PlanOptions, got {type(options).__name__}")


def _inner_iterations(iterations: int) -> int:
    # ott checks convergence every `inner_iterations` and runs max_iterations // inner of them,
    # so the block length must divide the budget for the budget to be exact.
    return math.gcd(10, iterations)


def _uniform_problem(geom: geometry.Geometry,
                     options: PlanOptions) -> linear_problem.LinearProblem:
    n, m = geom.shape
    a = jnp.full((n,), 1.0 / n, geom.dtype)
    b = jnp.full((m,), 1.0 / m, geom.dtype)
    return linear_problem.LinearProblem(geom, a, b, tau_a=options.tau_a, tau_b=options.tau_b)


def _epsilon(options: PlanOptions):
    if options.epsilon_init and options.epsilon_init > options.epsilon:
        # ott's `init` is a multiple of the target, ours is an absolute epsilon.
        return epsilon_scheduler.Epsilon(target=options.epsilon,
                                         init=options.epsilon_init / options.epsilon,
                                         decay=options.epsilon_decay)
    return options.epsilon


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


def ott_sinkhorn_solver(options: PlanOptions, size: int) -> sinkhorn.Sinkhorn:
    """The configured ott `Sinkhorn` (lse mode) for solver "ott" on a [size, size] problem."""
    balanced = options.tau_a == 1.0 and options.tau_b == 1.0
    implicit = None if options.plan_grad == "unroll" else implicit_diff(size, balanced)
    return sinkhorn.Sinkhorn(
        lse_mode=True,
        threshold=options.threshold,
        max_iterations=options.iterations,
        min_iterations=options.min_iterations,
        inner_iterations=_inner_iterations(options.iterations),
        momentum=(None if options.momentum == 1.0
                  else acceleration.Momentum(value=options.momentum)),
        anderson=(acceleration.AndersonAcceleration(memory=options.anderson)
                  if options.anderson else None),
        implicit_diff=implicit,
    )


def ott_output(cost: jnp.ndarray, options: PlanOptions):
    """The full ott output (`.matrix`, `.n_iters`, `.converged`, costs) for solver "ott" or
    "lowrank"; `transport_plan` takes its `.matrix`. No stop_gradient or plan scaling here.

    Args:
      cost: [n, m] cost matrix.
      options: `PlanOptions` with `solver` in ("ott", "lowrank").
    """
    _check_options(options)
    if options.solver == "ott":
        geom = geometry.Geometry(cost_matrix=cost, epsilon=_epsilon(options),
                                 scale_cost=COST_NORMS[options.cost_norm])
        return ott_sinkhorn_solver(options, cost.shape[0])(_uniform_problem(geom, options))
    if options.solver != "lowrank":
        raise ValueError(f"ott_output: solver must be 'ott' or 'lowrank', got "
                         f"{options.solver!r}")
    if options.rank > min(cost.shape):
        raise ValueError(f"rank must be <= the embedding size {min(cost.shape)}, "
                         f"got {options.rank}")
    solver = sinkhorn_lr.LRSinkhorn(
        rank=options.rank, threshold=options.threshold, max_iterations=options.iterations,
        min_iterations=options.min_iterations,
        inner_iterations=_inner_iterations(options.iterations))
    return solver(_uniform_problem(geometry.Geometry(
        cost_matrix=cost, scale_cost=COST_NORMS[options.cost_norm]), options))


def transport_plan(cost: jnp.ndarray, options: PlanOptions) -> jnp.ndarray:
    """Entropic transport plan between the dimensions of two embedding tables.

    Args:
      cost: [d, d] cost from `feature_cost` (its scale already applied).
      options: the solver options (`PlanOptions`, checked when it was built).

    Returns:
      [d, d] plan; rows sum to 1/d ("one") or 1 ("dim") when the solver converged and the
      problem is balanced. The reference solver returns all zeros when its kernel underflows;
      `plan_diagnostics` detects that.
    """
    _check_options(options)
    if cost.ndim != 2 or cost.shape[0] != cost.shape[1]:
        raise ValueError(f"transport_plan: cost must be a square [d, d] matrix, got {cost.shape}")
    if options.plan_grad == "stop":
        cost = jax.lax.stop_gradient(cost)
    if options.solver == "reference":
        plan = kernel_sinkhorn(cost, options.epsilon, options.iterations,
                               differentiable=options.plan_grad == "unroll")
    else:
        plan = ott_output(cost, options).matrix
    if options.plan_scale == "dim":
        plan = plan * cost.shape[0]
    return plan


def plan_targets(shape: tuple[int, int], plan_scale: str) -> tuple[float, float]:
    """(row target, column target): what every row / column sum of a `transport_plan` of
    `shape` should be, the marginals the solver was asked to match, scaled by `plan_scale`:
    1/n and 1/m ("one"), 1 and n/m ("dim")."""
    if plan_scale not in PLAN_SCALES:
        raise ValueError(f"plan_scale must be one of {PLAN_SCALES}, got {plan_scale!r}")
    n, m = shape
    if plan_scale == "dim":
        return 1.0, n / m
    return 1.0 / n, 1.0 / m


def plan_diagnostics(plan: jnp.ndarray, plan_scale: str = "one") -> dict[str, jnp.ndarray]:
    """Health of a plan from `transport_plan`, as jit-friendly scalars.

    Args:
      plan: [d, d] plan.
      plan_scale: the `PlanOptions.plan_scale` it was computed with ("one" | "dim").

    Returns:
      row_error, col_error: max |row (column) sum - target| (targets: `plan_targets`);
        for unbalanced problems (tau < 1) a nonzero error is expected;
      marginal_error: the larger of the two;
      relative_error: max |sum / target - 1| over every row and column: the largest relative
        deviation from the target marginals, the same number for either plan_scale;
      mass: total mass (1 for "one", d for "dim" when converged);
      all_zero: bool, the mass is below 1e-6 of the target (the kernel underflowed);
      has_nan: bool, some entry is NaN or infinite.
    """
    n, _ = plan.shape
    row_target, col_target = plan_targets(plan.shape, plan_scale)
    mass = jnp.sum(plan)
    row_error = jnp.max(jnp.abs(jnp.sum(plan, axis=1) - row_target))
    col_error = jnp.max(jnp.abs(jnp.sum(plan, axis=0) - col_target))
    return {
        "row_error": row_error,
        "col_error": col_error,
        "marginal_error": jnp.maximum(row_error, col_error),
        "relative_error": jnp.maximum(row_error / row_target, col_error / col_target),
        "mass": mass,
        "all_zero": mass < 1e-6 * row_target * n,
        "has_nan": jnp.logical_not(jnp.all(jnp.isfinite(plan))),
    }
