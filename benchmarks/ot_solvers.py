"""Benchmark of optimal-transport solver variants for RecGOAT's OAT fusion and OT loss.

Problems
  dimension problems: the d x d OAT cost C[p, q] = 100 mean_i (z_m[i,p] - z_cf[i,q])^2 between
    the embedding dimensions of a modality and the ID table (epsilon 0.01, as the reference),
    from random embeddings shaped like a trained model's (or `--embeddings file.npz` holding
    `z_m` / `z_cf`, or the golden file's `out/z_item_text` / `out/z_item_cf`), d in {64, 200},
    plus one d = 64 problem at image-feature scale where the kernel-domain solver underflows;
  point clouds: two 2-d Gaussian mixtures, n = 500 each, squared Euclidean cost normalised to
    mean 1, epsilon 0.05.
  Each d x d problem is also a point-cloud problem (column p of z_m is a point in R^I), which
  is how the Sinkhorn divergence is run on it.

Variants: the reference kernel Sinkhorn (100 iterations), ott log-domain Sinkhorn (threshold
1e-3), the same as a fixed 100-iteration scan, momentum, Anderson, epsilon schedule,
unbalanced (tau 0.95), low rank, and the Sinkhorn divergence.

Per variant: the transport cost <P, C> (the divergence's value for the divergence); its
relative error against a tightly converged float64 log-domain solution at the same epsilon
(threshold 1e-9) and against POT's exact `ot.emd2`; L1 distance of the plan to the converged
plan; marginal error ||P 1 - a||_1 + ||P^T 1 - b||_1; iterations; compile time; median time
over `--runs` runs after a warm-up; median time of value and gradient with respect to the
inputs (z_m or the first cloud). Unbalanced and low-rank solve a different problem: their error
against the balanced solution is the price of the relaxation, not a convergence error.

Usage (from the repository root):
  python3 -m benchmarks.ot_solvers [--embeddings FILE.npz] [--runs 5] [--out benchmarks/results]
Writes ot_solvers.json, ot_solvers.md and ot_solvers.png under --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import ot as pot
import ott
from ott.geometry import geometry, pointcloud
from ott.problems.linear import linear_problem
from ott.solvers.linear import sinkhorn
from ott.tools import sinkhorn_divergence

from recgoat_jax.ot import PlanOptions, feature_cost, ott_output, transport_plan
from recgoat_jax.ot.plan import implicit_diff

COST_SCALE = 100.0


@dataclasses.dataclass(frozen=True)
class Problem:
    """An OT problem as a function of differentiable `inputs`."""

    name: str
    inputs: np.ndarray  # what gradients are taken with respect to
    fixed: np.ndarray  # the other side (z_cf or the second cloud); an argument, not a constant
    cost_of: Callable  # (inputs, fixed) -> [n, m] cost
    points_of: Callable  # (inputs, fixed) -> (x [n, k], y [m, k]), ||x_p - y_q||^2 == cost[p, q]
    epsilon: float
    description: str


def dimension_problem(name: str, z_m: np.ndarray, z_cf: np.ndarray, description: str) -> Problem:
    point_scale = np.sqrt(COST_SCALE / z_m.shape[0])
    return Problem(
        name=name, inputs=np.asarray(z_m, np.float32), fixed=np.asarray(z_cf, np.float32),
        cost_of=lambda z, z_cf: feature_cost(z, z_cf, scale=COST_SCALE),
        points_of=lambda z, z_cf: (z.T * point_scale, z_cf.T * point_scale),
        epsilon=0.01, description=description)


def synthetic_embeddings(d: int, n_items: int, modality_std: float, seed: int):
    """ID embeddings with std ~0.03 (as a trained LightGCN table) and a modality table that is
    a noisy, rescaled permutation of its dimensions, so a good plan exists."""
    rng = np.random.default_rng(seed)
    z_cf = rng.normal(size=(n_items, d)) * 0.03
    gain = modality_std / 0.03 / np.sqrt(2)
    noise = rng.normal(size=(n_items, d)) * modality_std / np.sqrt(2)
    z_m = z_cf[:, rng.permutation(d)] * gain + noise
    return z_m.astype(np.float32), z_cf.astype(np.float32)


def gaussian_mixture_problem(n: int, seed: int) -> Problem:
    rng = np.random.default_rng(seed)

    def mixture(centres):
        pick = rng.integers(len(centres), size=n)
        return np.asarray(centres)[pick] + rng.normal(size=(n, 2)) * 0.3

    x = mixture([(-2, 0), (0, 2), (2, -1)]).astype(np.float32)
    y = mixture([(-1, -1), (1.5, 1.5), (3, 0), (0, -3)]).astype(np.float32)
    mean_cost = float(np.mean(((x[:, None] - y[None]) ** 2).sum(-1)))
    scale = 1.0 / np.sqrt(mean_cost)

    def points_of(a, b):
        return a * scale, b * scale

    def cost_of(a, b):
        return pointcloud.PointCloud(*points_of(a, b)).cost_matrix

    return Problem(f"gmm n={n}", x, y, cost_of, points_of, 0.05,
                   f"two 2-d Gaussian mixtures, n = {n}, cost normalised to mean 1")


# ------------------------------------------------------------------ variants

@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    grad: str  # how the gradient is taken
    config: Callable | None  # (problem, n) -> PlanOptions, or None for the divergence


def _oat(**options):
    return lambda problem, n: PlanOptions(epsilon=problem.epsilon, **options)


VARIANTS = [
    Variant("reference kernel (100 it)", "unroll", _oat(solver="reference", iterations=100,
                                                          plan_grad="unroll")),
    Variant("ott lse (thr 1e-3)", "implicit", _oat(solver="ott", iterations=2000,
                                                   plan_grad="implicit")),
    Variant("ott lse scan (100 it)", "implicit", _oat(solver="ott", iterations=100,
                                                      min_iterations=100, plan_grad="implicit")),
    Variant("momentum 1.3", "implicit", _oat(solver="ott", iterations=2000, momentum=1.3,
                                             plan_grad="implicit")),
    Variant("anderson m=5", "implicit", _oat(solver="ott", iterations=2000, anderson=5,
                                             plan_grad="implicit")),
    Variant("epsilon schedule (20x, 0.9)", "implicit",
            lambda p, n: PlanOptions(solver="ott", epsilon=p.epsilon, epsilon_init=20 * p.epsilon,
                                     epsilon_decay=0.9, iterations=2000, plan_grad="implicit")),
    Variant("unbalanced tau 0.95", "implicit", _oat(solver="ott", iterations=2000, tau_a=0.95,
                                                    tau_b=0.95, plan_grad="implicit")),
    Variant("low rank", "stop (via C only)",
            lambda p, n: PlanOptions(solver="lowrank", epsilon=p.epsilon, rank=max(4, n // 8),
                                     iterations=2000)),
    Variant("sinkhorn divergence", "implicit", None),
]


def _divergence(problem: Problem, inputs, fixed, threshold=1e-3, max_iterations=2000):
    x, y = problem.points_of(inputs, fixed)
    value, out = sinkhorn_divergence.sinkhorn_divergence(
        pointcloud.PointCloud, x, y, epsilon=problem.epsilon,
        solve_kwargs={"threshold": threshold, "max_iterations": max_iterations,
                      "implicit_diff": implicit_diff(x.shape[0], balanced=True)})
    return value, out.n_iters[0]


def forward_fn(problem: Problem, variant: Variant, n: int):
    """jit function (inputs, fixed) -> (value, plan (zeros for the divergence), iterations)."""
    if variant.config is None:
        def run(inputs, fixed):
            value, iters = _divergence(problem, inputs, fixed)
            return value, jnp.zeros((n, n), inputs.dtype), iters
        return jax.jit(run)
    cfg = variant.config(problem, n)

    def run(inputs, fixed):
        cost = problem.cost_of(inputs, fixed)
        if cfg.solver == "reference":
            plan, iters = transport_plan(cost, cfg), jnp.asarray(cfg.iterations)
        else:
            out = ott_output(cost, cfg)
            plan, iters = out.matrix, out.n_iters
        return jnp.sum(plan * cost), plan, iters

    return jax.jit(run)


def value_and_grad_fn(problem: Problem, variant: Variant, n: int):
    if variant.config is None:
        return jax.jit(jax.value_and_grad(lambda inputs, fixed: _divergence(problem, inputs,
                                                                           fixed)[0]))
    cfg = variant.config(problem, n)

    def value(inputs, fixed):
        cost = problem.cost_of(inputs, fixed)
        return jnp.sum(transport_plan(cost, cfg) * cost)

    return jax.jit(jax.value_and_grad(value))


def _timed(fn, args, runs: int):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return result, compile_s, statistics.median(times)


# ------------------------------------------------------------------ ground truth

def ground_truth(problem: Problem) -> dict:
    """Tightly converged float64 entropic solution, divergence and exact EMD."""
    with jax.enable_x64(True):
        args = jnp.asarray(problem.inputs, jnp.float64), jnp.asarray(problem.fixed, jnp.float64)
        cost = jax.jit(problem.cost_of)(*args)
        n, m = cost.shape
        solver = sinkhorn.Sinkhorn(threshold=1e-9, max_iterations=50_000, inner_iterations=100)
        out = jax.jit(lambda c: solver(linear_problem.LinearProblem(
            geometry.Geometry(cost_matrix=c, epsilon=problem.epsilon))))(cost)
        div, _ = jax.jit(lambda i, f: _divergence(problem, i, f, threshold=1e-9,
                                                  max_iterations=50_000))(*args)
        cost_np = np.asarray(cost)
        plan = np.asarray(out.matrix)
        emd = pot.emd2(np.full(n, 1.0 / n), np.full(m, 1.0 / m), cost_np, numItermax=10_000_000)
        return {"plan": plan, "cost": cost_np,
                "entropic_transport_cost": float(np.sum(plan * cost_np)),
                "divergence": float(div), "emd": float(emd), "converged": bool(out.converged),
                "iterations": int(out.n_iters)}


# ------------------------------------------------------------------ main

def evaluate(problem: Problem, runs: int) -> tuple[dict, list[dict]]:
    truth = ground_truth(problem)
    n = truth["cost"].shape[0]
    rows = []
    args = jnp.asarray(problem.inputs), jnp.asarray(problem.fixed)
    for variant in VARIANTS:
        (value, plan, iters), compile_s, seconds = _timed(forward_fn(problem, variant, n),
                                                          args, runs)
        try:
            (_, grad), _, grad_seconds = _timed(value_and_grad_fn(problem, variant, n), args, runs)
            grad_status = "finite" if np.all(np.isfinite(np.asarray(grad))) else "non-finite"
        except jax.errors.JaxRuntimeError as error:  # lineax raises when its solve fails
            grad_seconds, grad_status = None, "failed"
            print(f"  {variant.name}: gradient failed: {str(error).splitlines()[0][:120]}")
        value = float(value)
        is_divergence = variant.config is None
        target = truth["divergence"] if is_divergence else truth["entropic_transport_cost"]
        row = {"problem": problem.name, "variant": variant.name, "grad": variant.grad,
               "value": value, "err_vs_converged": abs(value - target) / abs(target),
               "err_vs_emd": abs(value - truth["emd"]) / abs(truth["emd"]),
               "iterations": int(iters), "compile_s": compile_s, "time_ms": 1e3 * seconds,
               "time_grad_ms": None if grad_seconds is None else 1e3 * grad_seconds,
               "grad_status": grad_status}
        if not is_divergence:
            plan = np.asarray(plan, np.float64)
            row["plan_l1_vs_converged"] = float(np.sum(np.abs(plan - truth["plan"])))
            row["marginal_err"] = float(np.sum(np.abs(plan.sum(1) - 1 / n))
                                        + np.sum(np.abs(plan.sum(0) - 1 / n)))
            row["plan_all_zero"] = bool(np.sum(plan) < 1e-6)
        rows.append(row)
        print(f"  {variant.name:28s} value {value:.5g}  err {row['err_vs_converged']:.2e}  "
              f"{row['time_ms']:.2f} ms  grad {_fmt(row['time_grad_ms'], '.2f')} ms", flush=True)
    summary = {"problem": problem.name, "description": problem.description, "size": n,
               "epsilon": problem.epsilon, "emd": truth["emd"],
               "converged_entropic_cost": truth["entropic_transport_cost"],
               "converged_divergence": truth["divergence"],
               "converged": truth["converged"], "converged_iterations": truth["iterations"]}
    return summary, rows


def _fmt(x, spec=".2e"):
    return "n/a" if x is None else format(x, spec)


def markdown(summaries: list[dict], rows: list[dict], meta: dict) -> str:
    lines = ["# OT solver variants", "",
             f"{meta['device']}, jax {meta['jax']}, ott-jax {meta['ott']}, POT {meta['pot']}; "
             f"load average {meta['load_average_1min']:.1f} at the start (timings are noisy "
             f"when it exceeds the core count); median of {meta['runs']} runs after a warm-up "
             "compile. Errors are relative; "
             "'converged' is a float64 log-domain solve at the same epsilon (threshold 1e-9).", "",
             "| problem | size | epsilon | EMD | converged <P,C> | converged divergence |",
             "|---|---|---|---|---|---|"]
    for s in summaries:
        lines.append(f"| {s['problem']} | {s['size']} | {s['epsilon']} | {s['emd']:.5g} | "
                     f"{s['converged_entropic_cost']:.5g} | {s['converged_divergence']:.5g} |")
    lines += ["", "| problem | variant | value | err vs converged | err vs EMD | plan L1 vs "
              "converged | marginal err | iters | time ms | time+grad ms | grad | compile s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['problem']} | {r['variant']} | {r['value']:.5g} | "
            f"{_fmt(r['err_vs_converged'])} | "
            f"{_fmt(r['err_vs_emd'])} | {_fmt(r.get('plan_l1_vs_converged'))} | "
            f"{_fmt(r.get('marginal_err'))} | {r['iterations']} | {r['time_ms']:.2f} | "
            f"{_fmt(r['time_grad_ms'], '.2f')} | {r['grad']}"
            f"{'' if r['grad_status'] == 'finite' else ' (' + r['grad_status'] + ')'} | "
            f"{r['compile_s']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(summaries: list[dict], rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(summaries), figsize=(5 * len(summaries), 4.5), squeeze=False)
    markers = "osD^v<>ph*"
    for ax, s in zip(axes[0], summaries):
        for i, variant in enumerate(VARIANTS):
            (r,) = [r for r in rows
                    if r["problem"] == s["problem"] and r["variant"] == variant.name]
            ax.scatter(r["time_ms"], max(r["err_vs_converged"], 1e-9), marker=markers[i],
                       label=variant.name, s=40)
        ax.set(xscale="log", yscale="log", xlabel="median time (ms)",
               ylabel="relative error vs converged", title=s["problem"])
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def problems(embeddings: str | None) -> list[Problem]:
    out = []
    if embeddings:
        data = np.load(embeddings)
        z_m = data["z_m"] if "z_m" in data else data["out/z_item_text"]
        z_cf = data["z_cf"] if "z_cf" in data else data["out/z_item_cf"]
        out.append(dimension_problem(f"trained d={z_m.shape[1]}", z_m, z_cf,
                                     f"embeddings from {os.path.basename(embeddings)}"))
    for d in (64, 200):
        z_m, z_cf = synthetic_embeddings(d, 2000, modality_std=0.075, seed=d)
        out.append(dimension_problem(f"dims d={d}", z_m, z_cf,
                                     "I = 2000 items, z_cf std 0.03, z_m std 0.075 (text-like)"))
    z_m, z_cf = synthetic_embeddings(64, 2000, modality_std=0.7, seed=7)
    out.append(dimension_problem("dims d=64 image-scale", z_m, z_cf,
                                 "I = 2000, z_m std 0.7 (image-like): the kernel solver "
                                 "underflows"))
    out.append(gaussian_mixture_problem(500, seed=0))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embeddings", help="npz with z_m and z_cf [I, d] (trained embeddings)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"jax": jax.__version__, "ott": ott.__version__, "pot": pot.__version__,
            "device": f"{jax.devices()[0].platform} ({os.cpu_count()} cores, {platform.machine()})",
            "runs": args.runs, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "load_average_1min": os.getloadavg()[0]}
    summaries, rows = [], []
    for problem in problems(args.embeddings):
        print(f"{problem.name}: {problem.description}", flush=True)
        summary, problem_rows = evaluate(problem, args.runs)
        summaries.append(summary)
        rows.extend(problem_rows)
    (out_dir / "ot_solvers.json").write_text(
        json.dumps({"meta": meta, "problems": summaries, "results": rows}, indent=2))
    (out_dir / "ot_solvers.md").write_text(markdown(summaries, rows, meta))
    plot(summaries, rows, out_dir / "ot_solvers.png")
    print(f"wrote {out_dir}/ot_solvers.{{json,md,png}}")


if __name__ == "__main__":
    main()
