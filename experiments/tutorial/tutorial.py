"""Differentiable optimal transport, from two point clouds to RecGOAT: a literate script.

Run it from the repository root:

    python experiments/tutorial/tutorial.py          # full mode: writes tutorial.md + figures/
    python experiments/tutorial/tutorial.py --fast   # smaller problems, for CI

The file is a sequence of cells (`# %%` code, `# %% [markdown]` prose, `# %% [hidden]` code that
the rendered page leaves out). Each section is a function that returns a dict of the numbers
the prose quotes; `main` runs them, draws the figures and renders `tutorial.md` from this very
file, replacing each `{{name}}` or `{{name:format}}` in the prose with the number `name` that
the code computed. tests/experiments/test_tutorial.py runs `main(fast=True)` and checks every such number.
"""

# %% [hidden]
from __future__ import annotations

import argparse
import math
import re
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import ot  # POT, for the exact (linear-programming) plan  # noqa: E402
from ott.geometry import geometry, pointcloud  # noqa: E402
from ott.problems.linear import linear_problem  # noqa: E402
from ott.solvers.linear import sinkhorn  # noqa: E402

from recgoat_jax import config as config_lib  # noqa: E402
from recgoat_jax.config import OATConfig  # noqa: E402
from recgoat_jax.data import load_dataset  # noqa: E402
from recgoat_jax.models.recgoat import select_modalities  # noqa: E402
from recgoat_jax.models.registry import plan_options, recgoat_module  # noqa: E402
from recgoat_jax.ot import feature_cost, kernel_sinkhorn, ot_loss, ott_output  # noqa: E402
from recgoat_jax.train.loop import Trainer  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
REFERENCE_CONFIG = REPO / "experiments" / "configs" / "recgoat-reference.toml"
FLOAT32_TINY = float(np.finfo(np.float32).smallest_subnormal)  # 1.4e-45
FLOAT32_LOG_MAX = float(np.log(np.finfo(np.float32).max))  # 88.7


def entropy(plan) -> float:
    """H(P) = -sum P log P, with 0 log 0 = 0. plan: [n, m], entries summing to 1."""
    p = np.asarray(plan, np.float64).ravel()
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))


def marginal_error(plan, a, b) -> float:
    """max |P 1 - a|, |P^T 1 - b| relative to the largest marginal entry. plan: [n, m]."""
    plan, a, b = (np.asarray(v, np.float64) for v in (plan, a, b))
    err = max(np.abs(plan.sum(1) - a).max(), np.abs(plan.sum(0) - b).max())
    return float(err / max(np.max(a), np.max(b)))


def uniform(n: int, dtype=np.float32) -> np.ndarray:
    return np.full(n, 1.0 / n, dtype)


# %% [markdown]
# # Differentiable optimal transport, from two point clouds to RecGOAT
#
# Optimal transport (OT) compares two distributions by the cheapest way to move the mass of
# one onto the other. RecGOAT uses it twice: a *transport plan between embedding dimensions*
# aligns each modality with the ID embeddings, and a *distribution-level loss* can pull the
# modality's item embeddings towards the ID embeddings. This page builds both up from
# scratch, and every number in it is computed by `experiments/tutorial/tutorial.py`, the
# script this page is rendered from (`python experiments/tutorial/tutorial.py`; a test runs it
# in CI and checks each number the text states).
#
# ## 1. Discrete OT between two point clouds
#
# Take {{n_source}} points x_i and {{n_target}} points y_j in the plane, each cloud with uniform
# mass (a_i = 1/n, b_j = 1/m), and the squared distance as the cost of moving a unit of
# mass, C_ij = |x_i - y_j|^2. A *transport plan* P is an n x m matrix of non-negative masses
# whose rows sum to a and whose columns sum to b; OT picks the plan of least total cost
# <P, C> = sum_ij P_ij C_ij. That is a linear program, which POT's `ot.emd` solves exactly.

# %%
def discrete_ot(n: int = 6, m: int = 8, seed: int = 0) -> dict:
    """Exact plan between two small clouds. Returns x [n, 2], y [m, 2], cost [n, m], plan."""
    rng = np.random.default_rng(seed)
    angle_x = np.sort(rng.uniform(0.2, 2.9, n))
    angle_y = np.sort(rng.uniform(0.2, 2.9, m))
    x = np.stack([np.cos(angle_x), np.sin(angle_x)], 1) + rng.normal(0, 0.05, (n, 2))
    y = 0.6 * np.stack([np.cos(angle_y), np.sin(angle_y)], 1) + [0.3, -0.9]
    cost = ot.dist(x, y)  # squared Euclidean, [n, m]
    exact = ot.emd(uniform(n, np.float64), uniform(m, np.float64), cost)
    return {"x": x, "y": y, "cost": cost, "exact": exact}


# %% [markdown]
# The exact plan costs <P*, C> = {{exact_cost:.4f}}. It is sparse: {{exact_nonzeros}} of its
# {{n_pairs}} entries are non-zero. An optimal vertex of the transport polytope never has
# more than n + m - 1 = {{nonzero_bound}} of them, so most points send their mass to a
# single partner and a few split it.
#
# ![The two clouds and the exact plan](figures/1_exact_plan.png)
#
# The exact plan jumps when the points move (the optimal vertex changes), so its cost is
# not smooth in x. *Entropic* OT adds a penalty eps * sum P log P, which keeps every entry
# positive and makes the solution a smooth function of the cost:
#
#     P_eps = argmin_P <P, C> - eps H(P),     H(P) = -sum_ij P_ij log P_ij.
#
# ott-jax's Sinkhorn solver computes P_eps:

# %%
def entropic_plan(cost, epsilon, threshold=1e-6):
    """ott-jax log-domain Sinkhorn between uniform marginals. cost: [n, m] -> plan [n, m]."""
    geom = geometry.Geometry(cost_matrix=cost, epsilon=epsilon)
    solver = sinkhorn.Sinkhorn(threshold=threshold, max_iterations=20_000)
    return solver(linear_problem.LinearProblem(geom)).matrix  # a, b default to uniform


# %% [markdown]
# As eps grows the plan blurs: its entropy rises from close to the exact plan's
# ({{exact_entropy:.3f}}) towards log(nm) = {{max_entropy:.3f}}, the entropy of the
# independent coupling a b^T, and its transport cost <P_eps, C> rises above the exact
# optimum. "L1 to exact" is sum |P_eps - P*|, "L1 to ab^T" is sum |P_eps - a b^T|; both lie
# in [0, 2]. The marginal error is the largest deviation of a row or column sum, relative
# to 1/n.
#
# {{entropic_table}}
#
# ![Plans blur as epsilon grows](figures/2_entropic_plans.png)

# %% [hidden]
def section_discrete(fast: bool) -> dict:
    clouds = discrete_ot()
    x, y, cost, exact = clouds["x"], clouds["y"], clouds["cost"], clouds["exact"]
    n, m = cost.shape
    a, b = uniform(n, np.float64), uniform(m, np.float64)
    product = np.outer(a, b)
    epsilons = [0.003, 0.03, 0.3, 3.0]
    solve = jax.jit(entropic_plan)  # epsilon is traced: one compilation for every value
    plans = [np.asarray(solve(jnp.asarray(cost, jnp.float32), eps), np.float64)
             for eps in epsilons]
    rows = [{"epsilon": eps, "entropy": entropy(p), "transport_cost": float(np.sum(p * cost)),
             "l1_to_exact": float(np.abs(p - exact).sum()),
             "l1_to_product": float(np.abs(p - product).sum()),
             "marginal_error": marginal_error(p, a, b)} for eps, p in zip(epsilons, plans)]
    table = ["| eps | entropy H(P) | <P, C> | L1 to exact | L1 to ab^T | marginal error |",
             "|---:|---:|---:|---:|---:|---:|"]
    table += [f"| {r['epsilon']:g} | {r['entropy']:.3f} | {r['transport_cost']:.4f} | "
              f"{r['l1_to_exact']:.3f} | {r['l1_to_product']:.3f} | {r['marginal_error']:.1e} |"
              for r in rows]
    return {
        "n_source": n, "n_target": m, "n_pairs": n * m, "nonzero_bound": n + m - 1,
        "exact_cost": float(np.sum(exact * cost)),
        "exact_nonzeros": int(np.sum(exact > 1e-12)),
        "exact_entropy": entropy(exact), "max_entropy": float(np.log(n * m)),
        "entropic_table": "\n".join(table),
        "entropic_rows": rows, "x": x, "y": y, "cost": cost, "exact": exact, "a": a, "b": b,
        "plans": plans, "epsilons": epsilons,
    }


# %% [markdown]
# ## 2. Sinkhorn in a dozen lines, and why the log domain
#
# The entropic plan has the form P = diag(u) K diag(v) with the *Gibbs kernel*
# K = exp(-C / eps): only the row and column scalings u, v are unknown. Sinkhorn's algorithm
# finds them by matching the marginals alternately, the rows, then the columns:

# %%
def sinkhorn_kernel(cost, a, b, epsilon, iterations):
    """Kernel-domain Sinkhorn. cost: [n, m]; a: [n], b: [m] -> plan [n, m]."""
    kernel = jnp.exp(-cost / epsilon)

    def step(v, _):
        u = a / (kernel @ v)  # rows of diag(u) K diag(v) now sum to a
        v = b / (kernel.T @ u)  # columns now sum to b
        return v, None

    v, _ = jax.lax.scan(step, jnp.ones_like(b), None, length=iterations)
    u = a / (kernel @ v)
    return u[:, None] * kernel * v[None, :]


# %% [markdown]
# On the clouds of section 1 at eps = {{check_epsilon}}, {{check_iterations}} of these
# iterations give ott-jax's plan to within {{kernel_vs_ott:.1e}} (largest entry-wise
# difference; the plan's entries are about 1/(nm) = {{mean_entry:.3f}}).
#
# Now the settings of the public RecGOAT implementation: the cost between the
# d = {{dim}} embedding *dimensions* of a modality and of the ID embeddings,
# C[p, q] = {{cost_scale:g}} * mean_i (z_m[i, p] - z_cf[i, q])^2 (`recgoat_jax.ot.feature_cost`),
# eps = {{reference_epsilon:g}}, {{reference_iterations}} iterations, in float32. With
# {{n_items}} items whose embedding entries have standard deviation {{std}} (the reference
# initialises its ID embeddings with exactly that), the smallest cost is {{min_cost:.2f}}, so
# every kernel entry is at most exp(-{{min_cost_over_eps:.0f}}) = 10^-{{kernel_log10:.0f}}:
# far below float32's smallest positive number, {{float32_tiny:.1e}}. All
# {{kernel_zero_percent:.0f}}% of the kernel's entries are exactly zero. Our dozen lines then
# divide by zero, and {{plain_nan_percent:.0f}}% of the plan is NaN. The reference adds 1e-8
# to each denominator (`recgoat_jax.ot.kernel_sinkhorn` reproduces it): no NaN
# ({{reference_nan_count}} entries), but a plan of total mass {{reference_mass:g}} instead of 1,
# all zeros.
#
# The *log domain* keeps the logarithms f = eps log u, g = eps log v (the dual potentials)
# and replaces each matrix-vector product by a log-sum-exp, which subtracts the largest
# exponent before exponentiating, so nothing underflows:

# %%
def sinkhorn_log(cost, a, b, epsilon, iterations):
    """Log-domain Sinkhorn. cost: [n, m]; a: [n], b: [m] -> plan [n, m]."""
    lse = jax.scipy.special.logsumexp

    def step(g, _):
        f = epsilon * jnp.log(a) - epsilon * lse((g[None, :] - cost) / epsilon, axis=1)
        g = epsilon * jnp.log(b) - epsilon * lse((f[:, None] - cost) / epsilon, axis=0)
        return g, None

    g, _ = jax.lax.scan(step, jnp.zeros_like(b), None, length=iterations)
    f = epsilon * jnp.log(a) - epsilon * lse((g[None, :] - cost) / epsilon, axis=1)
    return jnp.exp((f[:, None] + g[None, :] - cost) / epsilon)


# %% [markdown]
# On the same float32 problem, {{log_iterations}} iterations of this loop meet the marginals
# to a relative error of {{log_marginal_error:.1e}} (largest deviation of a row or column
# sum, relative to 1/d). ott-jax's solver, as RecGOAT calls it (`recgoat_jax.ot.ott_output`,
# what `transport_plan` runs for `model.oat.solver = "ott"`), reaches its stopping
# threshold after {{ott_iterations}} iterations, with marginals off by at most
# {{ott_marginal_error:.1e}}; the two plans agree to {{log_vs_ott:.1e}} (their entries are
# about 1/d^2 = {{dim_entry:.1e}}). No rescaling could rescue the kernel domain here: for every
# pair, u_i v_j = P_ij / K_ij = exp((f_i + g_j) / eps), and the largest of these is
# exp({{log_uv_max:.0f}}), so one of u_i, v_j would be at least exp({{log_uv_half:.0f}}), beyond
# float32's largest number exp({{float32_log_max:.1f}}).
#
# How large may the embeddings be? Sweeping their standard deviation (figure, left), the
# reference's plan keeps its mass while the embeddings are small, and has lost all of it
# (less than 1e-6 left) from a standard deviation of {{collapse_std:g}} on, which the
# reference's own initialisation of the ID embeddings (0.1) reaches. The log-domain plan
# meets its marginals at every scale (largest relative error over the sweep:
# {{sweep_log_error:.1e}}).
#
# ![Kernel-domain underflow](figures/3_underflow.png)

# %% [hidden]
def embedding_pair(n_items: int, dim: int, std: float, seed: int) -> tuple[jax.Array, jax.Array]:
    """Independent N(0, std^2) modality and ID embeddings, both [n_items, dim], float32."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    return (std * jax.random.normal(k1, (n_items, dim), jnp.float32),
            std * jax.random.normal(k2, (n_items, dim), jnp.float32))


def section_sinkhorn(fast: bool, discrete: dict) -> dict:
    # (a) the dozen lines against ott-jax on the clouds of section 1
    check_eps, check_iters = 0.3, 200
    cost = jnp.asarray(discrete["cost"], jnp.float32)
    n, m = cost.shape
    a, b = jnp.asarray(uniform(n)), jnp.asarray(uniform(m))
    ours = sinkhorn_kernel(cost, a, b, check_eps, check_iters)
    reference_plan = entropic_plan(cost, check_eps, threshold=1e-7)
    kernel_vs_ott = float(jnp.max(jnp.abs(ours - reference_plan)))

    # (b) the public RecGOAT's settings
    oat = OATConfig()  # the reference's cost scale, epsilon and iteration count
    dim, n_items, std = 64, (256 if fast else 1024), 0.1
    ott_cfg = OATConfig(solver="ott", iterations=2000, threshold=1e-4)
    solve_kernel = jax.jit(lambda c: kernel_sinkhorn(c, oat.epsilon, oat.iterations))
    solve_ott = jax.jit(lambda c: ott_output(c, plan_options(ott_cfg)))
    cost_of = jax.jit(lambda zm, zc: feature_cost(zm, zc, oat.cost_scale))
    ours_kernel = jax.jit(lambda c, a, b: sinkhorn_kernel(c, a, b, oat.epsilon, oat.iterations))
    log_iterations = 1000
    ours_log = jax.jit(lambda c, a, b: sinkhorn_log(c, a, b, oat.epsilon, log_iterations))
    a_d = b_d = jnp.asarray(uniform(dim))
    c = cost_of(*embedding_pair(n_items, dim, std, seed=0))
    kernel = jnp.exp(-c / oat.epsilon)
    plain = ours_kernel(c, a_d, b_d)
    reference = solve_kernel(c)
    log_plan = ours_log(c, a_d, b_d)
    out = solve_ott(c)
    f, g = np.asarray(out.f, np.float64), np.asarray(out.g, np.float64)
    log_uv_max = float((f.max() + g.max()) / oat.epsilon)

    # (c) sweep the embedding scale
    stds = [0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.07, 0.1, 0.2]
    if fast:
        stds = [0.01, 0.03, 0.05, 0.1]
    sweep = []
    for k, s in enumerate(stds):
        cs = cost_of(*embedding_pair(n_items, dim, s, seed=1 + k))
        plan_ott = solve_ott(cs).matrix
        sweep.append({"std": s, "reference_mass": float(jnp.sum(solve_kernel(cs))),
                      "ott_mass": float(jnp.sum(plan_ott)),
                      "ott_error": marginal_error(plan_ott, a_d, b_d)})
    collapsed = [r for r in sweep if r["reference_mass"] < 1e-6]
    return {
        "check_epsilon": check_eps, "check_iterations": check_iters,
        "kernel_vs_ott": kernel_vs_ott, "mean_entry": 1.0 / (n * m),
        "dim": dim, "cost_scale": oat.cost_scale, "reference_epsilon": oat.epsilon,
        "reference_iterations": oat.iterations, "n_items": n_items, "std": std,
        "min_cost": float(jnp.min(c)), "min_cost_over_eps": float(jnp.min(c)) / oat.epsilon,
        "kernel_log10": float(jnp.min(c)) / oat.epsilon / math.log(10),
        "float32_tiny": FLOAT32_TINY, "float32_log_max": FLOAT32_LOG_MAX,
        "kernel_zero_percent": 100.0 * float(jnp.mean(kernel == 0)),
        "plain_nan_percent": 100.0 * float(jnp.mean(jnp.isnan(plain))),
        "reference_nan_count": int(jnp.sum(~jnp.isfinite(reference))),
        "reference_mass": float(jnp.sum(reference)),
        "log_iterations": log_iterations, "log_marginal_error": marginal_error(log_plan, a_d, b_d),
        "ott_marginal_error": marginal_error(out.matrix, a_d, b_d),
        "ott_iterations": int(out.n_iters),
        "log_vs_ott": float(jnp.max(jnp.abs(log_plan - out.matrix))),
        "dim_entry": 1.0 / dim ** 2,
        "log_uv_max": log_uv_max, "log_uv_half": log_uv_max / 2,
        "collapse_std": collapsed[0]["std"] if collapsed else float("nan"),
        "sweep_log_error": max(r["ott_error"] for r in sweep),
        "sweep": sweep, "underflow_cost": np.asarray(c), "reference_plan": np.asarray(reference),
        "plain_plan": np.asarray(plain), "log_plan": np.asarray(log_plan),
        "ott_plan": np.asarray(out.matrix),
    }


# %% [markdown]
# ## 3. Differentiating through OT
#
# Entropic OT is smooth, so a loss built on it has a gradient. Take the transport cost of the
# entropic plan as a function of the source points, L(x) = <P_eps(x), C(x)>, on the clouds
# of section 1 with eps = {{grad_epsilon}}, in float64. There are two ways to get dL/dx:
#
# - **Unrolled**: the Sinkhorn loop is ordinary JAX code, so `jax.grad` can differentiate
#   straight through its {{unroll_iterations}} iterations (it stores every iterate for the
#   backward pass: memory grows with the iteration count).
# - **Implicit**: at convergence the potentials solve the fixed-point equations of Sinkhorn;
#   the implicit function theorem gives their derivative from one linear solve, whatever the
#   number of iterations. This is ott-jax's default (`implicit_diff`).

# %%
def transport_cost_unrolled(x, y, epsilon, iterations):
    """<P_eps, C> through `sinkhorn_log`, differentiated by unrolling. x: [n, 2], y: [m, 2]."""
    cost = jnp.sum((x[:, None, :] - y[None, :, :]) ** 2, axis=-1)
    a, b = jnp.full(x.shape[0], 1.0 / x.shape[0]), jnp.full(y.shape[0], 1.0 / y.shape[0])
    return jnp.sum(sinkhorn_log(cost, a, b, epsilon, iterations) * cost)


def transport_cost_implicit(x, y, epsilon):
    """<P_eps, C> through ott-jax's solver, differentiated implicitly (its default)."""
    geom = pointcloud.PointCloud(x, y, epsilon=epsilon)
    out = sinkhorn.Sinkhorn(threshold=1e-12, max_iterations=20_000)(
        linear_problem.LinearProblem(geom))
    return jnp.sum(out.matrix * geom.cost_matrix)


# %% [markdown]
# Against central finite differences (step {{fd_step:g}}, {{fd_evaluations}} evaluations), the
# unrolled gradient is off by {{unrolled_vs_fd:.1e}} and the implicit one by
# {{implicit_vs_fd:.1e}}, relative to the gradient's largest entry; they differ from each
# other by {{unrolled_vs_implicit:.1e}}. Unrolling differentiates the *algorithm*, not the
# solution: cut the loop to {{short_iterations}} iterations and its gradient is off by
# {{short_unrolled_vs_fd:.0%}}.
#
# For the regularised OT cost itself (ott's `reg_ot_cost`) no derivative of the plan is
# needed at all: by the envelope theorem its gradient in x_i is sum_j P_ij 2 (x_i - y_j), the
# displacement towards the plan's barycentre. ott's gradient and this formula agree to
# {{envelope_error:.1e}}.
#
# ### A gradient flow
#
# Gradient descent on x of the *Sinkhorn divergence*
# S(x, y) = OT_eps(x, y) - (OT_eps(x, x) + OT_eps(y, y)) / 2 moves one cloud onto another.
# The debiasing terms make S(y, y) = 0 (here {{divergence_self:.1e}}), and its gradient at
# x = y vanishes up to float32 rounding (largest entry of n times the gradient:
# {{divergence_self_grad:.1e}}), whereas the plain entropic cost OT_eps(x, y) is
# {{entropic_self:.3f}} at x = y and its gradient there is {{entropic_self_grad:.3f}}:
# descending it would not stop at y. RecGOAT's distribution-level loss
# `recgoat_jax.ot.ot_loss` is exactly this divergence:

# %%
def gradient_flow(x, y, epsilon, steps, step_size):
    """Move the cloud x [n, 2] towards y [m, 2] by gradient descent on the Sinkhorn divergence.

    Returns the positions [steps + 1, n, 2]. The gradient in x_i carries the mass 1/n of that
    point, so it is multiplied by n: each step moves x_i a fraction of the way to its target.
    """
    grad = jax.grad(lambda x: ot_loss(x, y, "sinkhorn_divergence", epsilon, iterations=100))
    step = jax.jit(lambda x: x - step_size * x.shape[0] * grad(x))
    path = [x]
    for _ in range(steps):
        path.append(step(path[-1]))
    return np.stack(path)


# %% [markdown]
# Starting from a ring of {{flow_points}} points and following {{flow_steps}} steps towards
# two moons, the exact squared-Wasserstein cost (POT `ot.emd2`) falls from
# {{flow_w2_start:.3f}} to {{flow_w2_end:.5f}}, a factor of {{flow_w2_ratio:.0f}}.
#
# ![Gradient flow of the Sinkhorn divergence](figures/4_gradient_flow.png)

# %% [hidden]
def finite_difference_gradient(fun, x, step):
    """Central differences of scalar fun at x [n, k], one coordinate at a time."""
    x = np.asarray(x, np.float64)
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[index] = step
        grad[index] = (float(fun(jnp.asarray(x + e))) - float(fun(jnp.asarray(x - e)))) / (2 * step)
    return grad


def ring_and_moons(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A ring [n, 2] and two interleaved half-moons [n, 2]."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, 2 * np.pi, n)
    ring = 0.6 * np.stack([np.cos(t), np.sin(t)], 1) + [-1.2, 0.3] + rng.normal(0, 0.03, (n, 2))
    s = rng.uniform(0, np.pi, n)
    upper = rng.uniform(size=n) < 0.5
    moons = np.where(upper[:, None], np.stack([np.cos(s), np.sin(s)], 1),
                     np.stack([1 - np.cos(s), 0.5 - np.sin(s)], 1))
    moons = 0.7 * moons + [0.6, -0.1] + rng.normal(0, 0.03, (n, 2))
    return ring.astype(np.float32), moons.astype(np.float32)


def section_gradients(fast: bool, discrete: dict) -> dict:
    eps, unroll_iters, short_iters, fd_step = 0.1, 1000, 2, 1e-5
    with jax.enable_x64(True):
        x, y = jnp.asarray(discrete["x"]), jnp.asarray(discrete["y"])
        implicit = jax.jit(jax.value_and_grad(lambda x: transport_cost_implicit(x, y, eps)))
        grad_implicit = np.asarray(implicit(x)[1])
        grad_fd = finite_difference_gradient(lambda x: implicit(x)[0], x, fd_step)
        grad_unrolled = np.asarray(jax.jit(jax.grad(
            lambda x: transport_cost_unrolled(x, y, eps, unroll_iters)))(x))
        grad_short = np.asarray(jax.jit(jax.grad(
            lambda x: transport_cost_unrolled(x, y, eps, short_iters)))(x))

        def reg_ot_cost(x):
            geom = pointcloud.PointCloud(x, y, epsilon=eps)
            out = sinkhorn.Sinkhorn(threshold=1e-12, max_iterations=20_000)(
                linear_problem.LinearProblem(geom))
            return out.reg_ot_cost, out.matrix
        (_, plan), grad_reg = jax.jit(jax.value_and_grad(reg_ot_cost, has_aux=True))(x)
        plan, grad_reg = np.asarray(plan), np.asarray(grad_reg)
        envelope = 2 * (plan.sum(1)[:, None] * np.asarray(x) - plan @ np.asarray(y))
    scale = np.abs(grad_fd).max()

    # the flow runs in float32, as a training step would
    n_flow, steps, flow_eps = (64, 30, 0.01) if fast else (128, 60, 0.01)
    ring, moons = ring_and_moons(n_flow, seed=0)
    path = np.asarray(gradient_flow(jnp.asarray(ring), jnp.asarray(moons), flow_eps, steps, 0.1))
    w = uniform(n_flow, np.float64)

    def w2(points):
        return float(ot.emd2(w, w, ot.dist(points.astype(np.float64), moons.astype(np.float64))))

    at_target = jax.jit(lambda y: [jax.value_and_grad(
        lambda x: ot_loss(x, y, kind, flow_eps, iterations=100))(y)
        for kind in ("sinkhorn_divergence", "entropic")])
    (divergence_self, divergence_grad), (entropic_self, entropic_grad) = at_target(
        jnp.asarray(moons))
    return {
        "grad_epsilon": eps, "unroll_iterations": unroll_iters, "short_iterations": short_iters,
        "fd_step": fd_step, "fd_evaluations": 2 * grad_fd.size,
        "unrolled_vs_fd": float(np.abs(grad_unrolled - grad_fd).max() / scale),
        "implicit_vs_fd": float(np.abs(grad_implicit - grad_fd).max() / scale),
        "unrolled_vs_implicit": float(np.abs(grad_unrolled - grad_implicit).max() / scale),
        "short_unrolled_vs_fd": float(np.abs(grad_short - grad_fd).max() / scale),
        "envelope_error": float(np.abs(grad_reg - envelope).max() / np.abs(envelope).max()),
        "divergence_self": float(divergence_self), "entropic_self": float(entropic_self),
        "divergence_self_grad": float(n_flow * jnp.abs(divergence_grad).max()),
        "entropic_self_grad": float(n_flow * jnp.abs(entropic_grad).max()),
        "flow_points": n_flow, "flow_steps": steps,
        "flow_w2_start": w2(path[0]), "flow_w2_end": w2(path[-1]),
        "flow_w2_ratio": w2(path[0]) / w2(path[-1]),
        "grad_fd": grad_fd, "grad_unrolled": grad_unrolled, "grad_implicit": grad_implicit,
        "grad_short": grad_short, "path": path, "moons": moons,
    }


# %% [markdown]
# ## 4. OT inside RecGOAT
#
# RecGOAT fuses, for each item, its ID embedding z_cf (from LightGCN) with one embedding per
# modality z_m (from a GAT over the item kNN graph of that modality's features). The OAT
# step transports between the d embedding *dimensions*: C_m[p, q] is the mean squared
# difference between dimension p of z_m and dimension q of z_cf over all items, and T_m is
# the entropic plan between uniform marginals on the d dimensions. Then
#
#     aligned_m = z_m (T_m + Delta_m),      Delta_m a learned d x d matrix.
#
# The reference's plan has rows summing to 1/d, so z_m T_m is about d times smaller than
# z_m; `model.oat.plan_scale = "dim"` multiplies it by d, which makes z_m T_m the
# *barycentric map*: output dimension q is an average of the modality's dimensions,
# weighted by column q of the plan. We train RecGOAT on the synthetic `tiny` preset ({{n_users}} users,
# {{n_items_rec}} items, {{n_train}} training pairs, text and image features) with d =
# {{rec_dim}}, the log-domain solver at the reference's eps = {{rec_epsilon:g}}, and the
# distribution-level loss on (weight {{ot_weight:g}}), for {{epochs}} epochs:

# %%
def train_small_recgoat(epochs: int) -> dict:
    """Train RecGOAT on the `tiny` preset; return the config, dataset, trainer, parameters
    before and after, and the loss terms of every epoch."""
    cfg = config_lib.load(REFERENCE_CONFIG, [
        "data.preset=tiny", "model.dim=16",
        "model.oat.solver=ott", "model.oat.plan_scale=dim", "model.oat.iterations=2000",
        "loss.ot_loss=sinkhorn_divergence", "loss.ot_weight=1.0",
        f"train.epochs={epochs}", "train.batch_size=512", "train.n_devices=1"])
    dataset = load_dataset(cfg.data)
    trainer = Trainer(cfg, dataset)
    state = trainer.init_state()
    initial = jax.tree.map(np.asarray, state.params)  # train_epoch donates the state
    history = []
    for _ in range(epochs):
        state, stats, _ = trainer.train_epoch(state)
        history.append(stats)
    return {"cfg": cfg, "dataset": dataset, "trainer": trainer, "initial": initial,
            "params": state.params, "history": history}


def recgoat_outputs(run: dict, params) -> dict:
    """RecGOAT's forward pass with dropout off: {"plans", "z_modal", "z_item_cf", ...}."""
    cfg, dataset = run["cfg"], run["dataset"]
    modalities, user_modalities = select_modalities(dataset, cfg.model.modalities,
                                                    cfg.model.user_side)
    module = recgoat_module(cfg, dataset.n_users, dataset.n_items, modalities, user_modalities)
    return module.apply({"params": params}, run["trainer"].model.inputs, deterministic=True)


# %% [markdown]
# The distribution-level loss is the Sinkhorn divergence of section 3 between two clouds of
# the batch's items: their modality embeddings and their ID embeddings, each row
# L2-normalised (averaged over text and image). It moves *items* (a B x B plan), where OAT
# moves *dimensions*: it is an
# entropic, squared-distance stand-in for the W1 distance between the modality's and the ID
# embeddings' distributions that the paper's analysis wants small, a term the public code
# never adds to its loss. Here it fell from
# {{ot_first:.3f}} in the first epoch to {{ot_last:.3f}} in the last.
#
# The trained plans meet their marginals: largest row error {{text_row_error:.1e}} and
# column error {{text_column_error:.1e}} for text, {{image_row_error:.1e}} and
# {{image_column_error:.1e}} for image (the target is 1 with plan_scale "dim"). At
# eps = {{rec_epsilon:g}} they are concentrated: the largest entry of a row holds on average
# {{text_row_max:.0%}} of that modality dimension's mass (image: {{image_row_max:.0%}}), and
# the plan's transport cost is {{text_cost_ratio:.0%}} of that of the uniform coupling
# (image: {{image_cost_ratio:.0%}}): each modality dimension is sent mostly to the ID
# dimensions it is closest to. On the same costs the reference's kernel-domain solver returns
# a plan that carries only {{text_kernel_mass:.0%}} (text) and {{image_kernel_mass:.0%}}
# (image) of the mass (at initialisation {{text_kernel_mass_initial:.0%}} and
# {{image_kernel_mass_initial:.0%}}): in the rows whose kernel entries are tiny, the 1e-8
# guard, not the marginal, sets the scaling, and those rows are starved of mass.
#
# What is left to Delta? The plan can only average dimensions (its entries are non-negative
# and its columns sum to one); it cannot rotate, flip or rescale them. Delta_m is a free
# linear map, shaped by the losses on the fused embeddings: after training it has moved
# {{text_delta_change:.0%}} (text) and {{image_delta_change:.0%}} (image) away from its random
# initialisation, and the two parts of the aligned embedding have similar sizes,
# |z_m T_m| / |z_m Delta_m| = {{text_share_dim:.2f}} (text) and {{image_share_dim:.2f}} (image).
# With the reference's scale (plan rows summing to 1/d) that ratio would be
# {{text_share_one:.3f}} and {{image_share_one:.3f}}: Delta_m would carry almost all of
# aligned_m, and "OAT" would in effect be a learned linear map.
#
# ![RecGOAT's feature-transport plans](figures/5_recgoat_plans.png)

# %% [hidden]
def analyse_plans(run: dict, params) -> dict:
    """Per modality: cost [d, d], plan [d, d], the mass of the reference's kernel-domain plan
    on the same cost, and the sizes of z_m T_m and z_m Delta_m. params: host (numpy) arrays."""
    cfg = run["cfg"]
    oat = cfg.model.oat
    out = recgoat_outputs(run, params)
    result = {}
    for m, z_m in out["z_modal"].items():
        z_cf, plan = out["z_item_cf"], out["plans"][m]
        cost = feature_cost(z_m, z_cf, oat.cost_scale)
        result[m] = {
            "cost": cost, "plan": plan,
            "kernel_mass": jnp.sum(kernel_sinkhorn(cost, oat.epsilon, oat.iterations)),
            "through_plan": jnp.linalg.norm(z_m @ plan),
            "through_delta": jnp.linalg.norm(z_m @ params["fuse"][f"delta_{m}"]),
        }
    return result


def section_recgoat(fast: bool) -> dict:
    run = train_small_recgoat(epochs=60)  # epochs are cheap here: the compilation is not
    cfg, dataset, history = run["cfg"], run["dataset"], run["history"]
    analyse = jax.jit(lambda p: analyse_plans(run, p))
    trained = jax.tree.map(np.asarray, run["params"])
    before = jax.tree.map(np.asarray, analyse(run["initial"]))
    after = jax.tree.map(np.asarray, analyse(trained))
    d = cfg.model.dim
    numbers = {"n_users": dataset.n_users, "n_items_rec": dataset.n_items,
               "n_train": len(dataset.train), "rec_dim": d,
               "rec_epsilon": cfg.model.oat.epsilon, "ot_weight": cfg.loss.ot_weight,
               "epochs": len(history), "ot_first": history[0]["ot"], "ot_last": history[-1]["ot"],
               "history": history}
    for m in ("text", "image"):
        now, then = after[m], before[m]
        plan = now["plan"].astype(np.float64)
        delta = trained["fuse"][f"delta_{m}"]
        delta_initial = run["initial"]["fuse"][f"delta_{m}"]
        numbers.update({
            f"{m}_row_error": float(np.abs(plan.sum(1) - 1).max()),
            f"{m}_column_error": float(np.abs(plan.sum(0) - 1).max()),
            f"{m}_row_max": float(plan.max(1).mean()),
            f"{m}_cost_ratio": float(np.sum(plan / d * now["cost"]) / np.mean(now["cost"])),
            f"{m}_kernel_mass": float(now["kernel_mass"]),
            f"{m}_kernel_mass_initial": float(then["kernel_mass"]),
            f"{m}_delta_change": float(np.linalg.norm(delta - delta_initial)
                                       / np.linalg.norm(delta_initial)),
            f"{m}_share_dim": float(now["through_plan"] / now["through_delta"]),
            f"{m}_share_one": float(now["through_plan"] / d / now["through_delta"]),
            f"{m}_cost": now["cost"], f"{m}_plan": plan, f"{m}_delta": delta,
            f"{m}_delta_initial": delta_initial,
        })
    return numbers


# %% [hidden]
def figure_exact(result: dict, path: Path) -> None:
    x, y, cost, exact = result["x"], result["y"], result["cost"], result["exact"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    for i, j in zip(*np.nonzero(exact > 1e-12)):
        left.plot([x[i, 0], y[j, 0]], [x[i, 1], y[j, 1]], color="0.35",
                  lw=0.5 + 4 * exact[i, j] * len(x), alpha=0.5, zorder=1)
    left.scatter(*x.T, s=60, color="tab:blue", label="x (source)", zorder=2)
    left.scatter(*y.T, s=60, color="tab:orange", label="y (target)", zorder=2)
    for i, point in enumerate(x):
        left.annotate(str(i), point, textcoords="offset points", xytext=(6, 4), fontsize=8)
    for j, point in enumerate(y):
        left.annotate(str(j), point, textcoords="offset points", xytext=(6, -10), fontsize=8)
    left.set_title("exact plan: line width = mass moved", fontsize=10)
    left.set_aspect("equal")
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2, fontsize=9)
    im = right.imshow(cost, cmap="viridis")
    right.set_title("cost C_ij = |x_i - y_j|^2", fontsize=10)
    right.set_xlabel("target j")
    right.set_ylabel("source i")
    fig.colorbar(im, ax=right, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure_entropic(result: dict, path: Path) -> None:
    plans = [result["exact"]] + result["plans"]
    titles = ["exact (ot.emd)"] + [f"eps = {e:g}" for e in result["epsilons"]]
    vmax = max(p.max() for p in plans)
    fig, axes = plt.subplots(1, len(plans), figsize=(3.0 * len(plans), 3.0))
    for ax, p, title, row in zip(axes, plans, titles, [None] + result["entropic_rows"]):
        im = ax.imshow(p, cmap="magma", vmin=0, vmax=vmax)
        ax.set_title(title + ("" if row is None else f"\nH = {row['entropy']:.2f}"), fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].set_title(f"exact (ot.emd)\nH = {result['exact_entropy']:.2f}", fontsize=10)
    fig.colorbar(im, ax=axes, shrink=0.8, label="P_ij")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def figure_underflow(result: dict, path: Path) -> None:
    sweep = result["sweep"]
    stds = [r["std"] for r in sweep]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    floor = 1e-12  # zero on a log axis
    left.plot(stds, [max(r["reference_mass"], floor) for r in sweep], "o-", color="tab:red",
              label="kernel domain (reference, 1e-8 guard)")
    left.plot(stds, [r["ott_mass"] for r in sweep], "s--", color="tab:green",
              label="log domain (ott-jax)")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_ylim(floor / 3, 10)
    left.set_xlabel("standard deviation of the embedding entries")
    left.set_ylabel("total mass of the plan (should be 1)\n(zero drawn at 1e-12)")
    left.set_title(f"d = {result['dim']}, cost scale {result['cost_scale']:g}, "
                   f"eps = {result['reference_epsilon']:g}", fontsize=10)
    left.legend(fontsize=8)
    im = right.imshow(result["ott_plan"] * result["dim"], cmap="magma", vmin=0)
    right.set_title(f"log-domain plan x d at std {result['std']:g}\n"
                    f"(the kernel-domain plan is all zeros)", fontsize=10)
    right.set_xlabel("ID dimension q")
    right.set_ylabel("modality dimension p")
    fig.colorbar(im, ax=right, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure_flow(result: dict, path: Path) -> None:
    path_points, moons = result["path"], result["moons"]
    steps = len(path_points) - 1
    shown = sorted({0, steps // 10, steps // 3, steps})
    fig, axes = plt.subplots(1, len(shown), figsize=(3.4 * len(shown), 2.4), sharex=True,
                             sharey=True)
    for ax, k in zip(axes, shown):
        ax.scatter(*moons.T, s=8, color="tab:orange", alpha=0.6, label="target y")
        ax.scatter(*path_points[k].T, s=8, color="tab:blue", label="moving cloud x")
        ax.set_title(f"step {k}", fontsize=10)
        ax.set_aspect("equal")
    axes[0].set_yticks([-0.5, 0.0, 0.5, 1.0])
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=9, markerscale=2)
    fig.tight_layout(rect=(0.01, 0.1, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure_recgoat(result: dict, path: Path) -> None:
    fig, axes = plt.subplots(2, 3, figsize=(12, 7.4))
    for row, m in zip(axes, ("text", "image")):
        change = result[f"{m}_delta"] - result[f"{m}_delta_initial"]
        bound = np.abs(change).max()
        panels = [(result[f"{m}_cost"], f"cost C_{m}", dict(cmap="viridis", vmin=0)),
                  (result[f"{m}_plan"], f"plan T_{m} (x d: rows sum to 1)",
                   dict(cmap="magma", vmin=0)),
                  (change, f"Delta_{m}: change from its initialisation",
                   dict(cmap="coolwarm", vmin=-bound, vmax=bound))]
        for ax, (values, title, style) in zip(row, panels):
            im = ax.imshow(values, **style)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("ID dimension q")
            ax.set_ylabel(f"{m} dimension p")
            ax.set_xticks(range(0, values.shape[1], 5))
            ax.set_yticks(range(0, values.shape[0], 5))
            fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# %% [hidden]
PLACEHOLDER = re.compile(r"\{\{(\w+)(?::([^}]*))?\}\}")


def markdown_cells(source: str) -> list[tuple[str, str]]:
    """The script as (kind, text) cells: kind is "markdown", "code" or "hidden"; text before
    the first cell marker (the module docstring) is dropped."""
    cells, kind, lines = [], None, []
    for line in source.splitlines():
        if line.startswith("# %%"):
            if kind is not None:
                cells.append((kind, "\n".join(lines).strip("\n")))
            tag = line[4:].strip()
            kind = {"[markdown]": "markdown", "[hidden]": "hidden", "": "code"}[tag]
            lines = []
        elif kind == "markdown":
            lines.append(line[2:] if line.startswith("# ") else line.lstrip("#"))
        elif kind is not None:
            lines.append(line)
    if kind is not None:
        cells.append((kind, "\n".join(lines).strip("\n")))
    return cells


def placeholder_names(source: str) -> set[str]:
    """Every name the prose quotes as {{name}} or {{name:format}}."""
    return {match.group(1) for kind, text in markdown_cells(source) if kind == "markdown"
            for match in PLACEHOLDER.finditer(text)}


def render(source: str, numbers: dict) -> str:
    """The Markdown page: prose with the numbers filled in, code cells as Python blocks."""
    def fill(match):
        name, spec = match.group(1), match.group(2) or ""
        if name not in numbers:
            raise KeyError(f"tutorial.py prose quotes {{{{{name}}}}}, which no section computed")
        return format(numbers[name], spec)

    parts = []
    for kind, text in markdown_cells(source):
        if kind == "markdown":
            parts.append(PLACEHOLDER.sub(fill, text))
        elif kind == "code":
            parts.append(f"```python\n{text}\n```")
    return "\n\n".join(parts) + "\n"


# %% [hidden]
FIGURES = {"1_exact_plan.png": ("discrete", figure_exact),
           "2_entropic_plans.png": ("discrete", figure_entropic),
           "3_underflow.png": ("sinkhorn", figure_underflow),
           "4_gradient_flow.png": ("gradients", figure_flow),
           "5_recgoat_plans.png": ("recgoat", figure_recgoat)}


def main(fast: bool = False, out_dir: str | Path = HERE, log=print) -> dict:
    """Run every section, write out_dir/figures/*.png and out_dir/tutorial.md.

    Returns {section name: its dict of numbers (and arrays)}; `fast` shrinks the problems.
    """
    out_dir = Path(out_dir)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    results, start = {}, time.perf_counter()
    results["discrete"] = section_discrete(fast)
    log(f"1 discrete OT        {time.perf_counter() - start:6.1f} s")
    results["sinkhorn"] = section_sinkhorn(fast, results["discrete"])
    log(f"2 sinkhorn           {time.perf_counter() - start:6.1f} s")
    results["gradients"] = section_gradients(fast, results["discrete"])
    log(f"3 gradients          {time.perf_counter() - start:6.1f} s")
    results["recgoat"] = section_recgoat(fast)
    log(f"4 recgoat            {time.perf_counter() - start:6.1f} s")
    for name, (section, draw) in FIGURES.items():
        draw(results[section], out_dir / "figures" / name)
    numbers = {}
    for section, values in results.items():
        for key, value in values.items():
            if key in numbers:
                raise KeyError(f"section {section} reuses the name {key!r}")
            numbers[key] = value
    source = Path(__file__).read_text()
    (out_dir / "tutorial.md").write_text(render(source, numbers))
    log(f"figures + markdown   {time.perf_counter() - start:6.1f} s -> {out_dir}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="smaller problems (CI)")
    parser.add_argument("--out", default=str(HERE), help="folder for tutorial.md and figures/")
    args = parser.parse_args()
    main(args.fast, args.out)
