"""Time and peak memory of RecGOAT's OAT alignment alone, per formulation and solver.

The step, for one modality (REFERENCE.md section 3, step 3): cost C [d, d] between the embedding
dimensions of z_m and z_cf [I, d]; plan T [d, d] by entropic OT (epsilon 0.01, uniform
marginals, 100 iterations, no gradient through the plan, as the reference); output
aligned = z_m @ (T + Delta) [I, d]. "forward" computes aligned; "forward+backward" also the
gradients of sum(aligned * R) (R a fixed random [I, d]) with respect to z_m, z_cf and Delta.

Methods (the same inputs for all):
  torch-reference   the public code's formulation in torch: the [I, d, d] broadcast cost and
                    kernel-domain Sinkhorn (benchmarks.torch_reference.oat_align)
  torch-closed-form the same with the O(I d + d^2)-memory closed-form cost
  jax-reference     recgoat_jax: closed-form `feature_cost` + the kernel Sinkhorn solver
  jax-ott           recgoat_jax: closed-form cost + ott-jax log-domain Sinkhorn, a fixed
                    100-iteration scan (min_iterations = iterations = 100)
  pot               torch closed-form cost + POT `ot.sinkhorn(method="sinkhorn_log")`,
                    100 iterations (stopThr 0), on torch tensors
Inputs: z_m, z_cf ~ N(0, 0.01^2) (scale at which the kernel-domain solver neither underflows
nor runs into subnormal floats, so every method solves a proper problem), Delta ~ U(+-sqrt(6/2d)).

Memory: each (method, I, d) runs in a fresh subprocess (`--cell`) that imports only its
framework, sets a fixed glibc mmap threshold (so freed blocks leave the resident set), creates
the inputs, runs the step once (warm-up; JAX compiles here), then resets the kernel's
resident-set high-water mark (VmHWM, via /proc/self/clear_refs) and reads the resident set:
peak = VmHWM after the timed runs - resident set before them, i.e. the memory the step itself
needed on top of its inputs (its output included). Compilation memory is not counted. JAX cells
also report XLA's own buffer assignment (`compiled.memory_analysis()`: temporaries + outputs).
A cell whose estimated peak (torch-reference: 2 I d^2 * 4 bytes, the difference tensor and its
square) exceeds 80% of the available memory is reported "does not fit" and not run; a
subprocess that dies or times out is reported, not fatal.

Usage (repository root):
  python3 -m benchmarks.alignment_cost [--items 7050,18357,63001] [--dims 64,200,600,800]
      [--methods torch-reference,torch-closed-form,jax-reference,jax-ott,pot] [--reps 5]
      [--wait-quiet-min 40] [--out benchmarks/results] [--tag _smoke]
Writes <out>/alignment_cost<tag>.json and .md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time

import numpy as np

from benchmarks import common

METHODS = ("torch-reference", "torch-closed-form", "jax-reference", "jax-ott", "pot")
EPSILON, ITERATIONS, COST_SCALE, INPUT_STD = 0.01, 100, 100.0, 0.01
FIT_FRACTION = 0.8
SMALL_OVERHEAD = 64 << 20  # allowance for everything but the [I, d, d] tensors


def estimate_peak_bytes(method: str, n_items: int, dim: int) -> int:
    """Analytic peak of one step on top of its inputs (bytes, float32)."""
    io = 3 * n_items * dim * 4 + 4 * dim * dim * 4  # aligned, gradients, R-sized products; plans
    if method == "torch-reference":
        return 2 * n_items * dim * dim * 4 + io
    return io


def make_inputs(n_items: int, dim: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    bound = np.sqrt(6.0 / (2 * dim))
    return {"z_m": (INPUT_STD * rng.standard_normal((n_items, dim))).astype(np.float32),
            "z_cf": (INPUT_STD * rng.standard_normal((n_items, dim))).astype(np.float32),
            "delta": rng.uniform(-bound, bound, (dim, dim)).astype(np.float32),
            "upstream": rng.standard_normal((n_items, dim)).astype(np.float32)}


# --------------------------------------------------------------------------- the step, per method

def torch_step(method: str, arrays: dict):
    """(forward(), forward_backward()) closures for a torch-based method."""
    import torch
    from benchmarks.torch_reference import oat_align

    z_m, z_cf, delta, upstream = (torch.from_numpy(arrays[k]) for k in
                                  ("z_m", "z_cf", "delta", "upstream"))
    if method == "pot":
        import ot as pot
        from benchmarks.torch_reference import dimension_cost

        def align(zm, zcf, dl):
            cost = dimension_cost(zm, zcf, closed_form=True, scale=COST_SCALE)
            d = cost.shape[0]
            with torch.no_grad():
                marginal = torch.full((d,), 1.0 / d)
                plan = pot.sinkhorn(marginal, marginal, cost.detach(), EPSILON,
                                    method="sinkhorn_log", numItermax=ITERATIONS, stopThr=0.0,
                                    warn=False)
            return zm @ (plan + dl)
    else:
        closed = method == "torch-closed-form"

        def align(zm, zcf, dl):
            aligned, _, cost = oat_align(zm, zcf, dl, closed_form=closed, epsilon=EPSILON,
                                         iterations=ITERATIONS, scale=COST_SCALE)
            return aligned, cost  # the reference keeps the cost alive while it trains

    def forward():
        with torch.no_grad():
            out = align(z_m, z_cf, delta)
        return out

    def forward_backward():
        leaves = [x.detach().requires_grad_(True) for x in (z_m, z_cf, delta)]
        out = align(*leaves)
        aligned = out[0] if isinstance(out, tuple) else out
        (aligned * upstream).sum().backward()
        return out, [x.grad for x in leaves]

    return forward, forward_backward


def jax_step(method: str, arrays: dict):
    """(forward(), forward_backward(), memory_analysis dict) for a JAX method (compiled here)."""
    import jax
    import jax.numpy as jnp
    from recgoat_jax.config import OATConfig
    from recgoat_jax.ot.cost import feature_cost
    from recgoat_jax.models.registry import plan_options
    from recgoat_jax.ot.plan import transport_plan

    if method == "jax-reference":
        cfg = OATConfig(solver="reference", epsilon=EPSILON, iterations=ITERATIONS,
                        cost_scale=COST_SCALE, plan_grad="stop")
    else:
        cfg = OATConfig(solver="ott", epsilon=EPSILON, iterations=ITERATIONS,
                        min_iterations=ITERATIONS, cost_scale=COST_SCALE, plan_grad="stop")

    def align(z_m, z_cf, delta):
        plan = transport_plan(feature_cost(z_m, z_cf, cfg.cost_scale), plan_options(cfg))
        return z_m @ (plan + delta)

    def loss(z_m, z_cf, delta, upstream):
        return jnp.sum(align(z_m, z_cf, delta) * upstream)

    args = [jnp.asarray(arrays[k]) for k in ("z_m", "z_cf", "delta")]
    upstream = jnp.asarray(arrays["upstream"])
    fwd = jax.jit(align).lower(*args).compile()
    bwd = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))).lower(*args, upstream).compile()
    analysis = {}
    for name, compiled in (("forward", fwd), ("forward+backward", bwd)):
        try:
            m = compiled.memory_analysis()
            analysis[name] = {"temp_bytes": int(m.temp_size_in_bytes),
                              "output_bytes": int(m.output_size_in_bytes),
                              "argument_bytes": int(m.argument_size_in_bytes)}
        except Exception:  # noqa: BLE001 - not every backend reports it
            analysis[name] = None
    return (lambda: jax.block_until_ready(fwd(*args)),
            lambda: jax.block_until_ready(bwd(*args, upstream)), analysis)


# --------------------------------------------------------------------------- one cell (subprocess)

def run_cell(method: str, n_items: int, dim: int, reps: int, max_seconds: float) -> dict:
    """Measure both phases of one cell in this process; returns the cell's record."""
    arrays = make_inputs(n_items, dim)
    t0 = time.perf_counter()
    if method.startswith("jax"):
        forward, forward_backward, analysis = jax_step(method, arrays)
    else:
        import torch
        forward, forward_backward = torch_step(method, arrays)
        analysis = None
    setup_s = time.perf_counter() - t0
    record = {"method": method, "items": n_items, "dim": dim, "status": "ok",
              "setup_s": setup_s, "xla_memory_analysis": analysis, "phases": {}}
    if not method.startswith("jax"):
        record["torch_threads"] = torch.get_num_threads()
    for phase, fn in (("forward", forward), ("forward+backward", forward_backward)):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()  # warm-up
        warmup = time.perf_counter() - t0
        del out
        gc.collect()
        reset_ok = common.reset_peak_rss()
        base = common.rss_bytes()
        times = []
        n = max(1, min(reps, int(max_seconds / max(warmup, 1e-6))))
        for _ in range(n):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
            del out
        record["phases"][phase] = {"warmup_s": warmup, "time_s": common.summarize(times),
                                   "peak_bytes": common.peak_rss_bytes() - base,
                                   "rss_before_bytes": base, "peak_reset": reset_ok}
    return record


# --------------------------------------------------------------------------- driver

def run_in_subprocess(method: str, n_items: int, dim: int, reps: int, max_seconds: float,
                      timeout: float) -> dict:
    env = dict(os.environ, **common.MALLOC_ENV, PYTHONPATH=str(common.REPO) + os.pathsep
               + os.environ.get("PYTHONPATH", ""))
    if method == "pot":  # POT would otherwise import (and initialise) every backend it finds
        env.update(POT_BACKEND_DISABLE_JAX="1", POT_BACKEND_DISABLE_TENSORFLOW="1",
                   POT_BACKEND_DISABLE_CUPY="1")
    cmd = [sys.executable, "-m", "benchmarks.alignment_cost", "--cell",
           f"{method},{n_items},{dim}", "--reps", str(reps), "--max-seconds", str(max_seconds)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=common.REPO)
    except subprocess.TimeoutExpired:
        return {"method": method, "items": n_items, "dim": dim, "status": "timed out",
                "reason": f"no result within {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode != 0 or not lines:
        how = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else \
            f"exit status {proc.returncode}"
        return {"method": method, "items": n_items, "dim": dim, "status": "died",
                "reason": f"{how}: {proc.stderr.strip()[-400:]}"}
    record = json.loads(lines[-1])
    record["subprocess_wall_s"] = wall
    return record


def markdown(result: dict) -> str:
    meta = result["meta"]
    text = common.run_header("OAT alignment step: time and peak memory", meta)
    during = [meta["load"]["after"]] + [c["load_after"] for c in result["cells"]
                                        if "load_after" in c]
    text += "\n" + common.load_warning([meta["load"]["before"]], during,
                                       meta["threads"].get("busy_threads",
                                                           meta["machine"]["cpus_usable"]))
    busy = [c for c in result["cells"] if c.get("load_after", [0])[0]
            >= common.QUIET_LOAD + meta["threads"].get("busy_threads", 2)]
    if busy:
        text += ("\nCells measured while other work ran (1-minute load at their end above "
                 "the quiet level): " + ", ".join(f"I={c['items']} d={c['dim']} {c['method']}"
                                                 for c in busy) + ".\n")
    m = meta["machine"]
    text += (f"\nMachine: {m['cpu_model']}, {m['cpus_usable']} usable CPUs, "
             f"{m['memory_total_gib']} GiB memory ({m['memory_available_gib']} GiB available at "
             f"the start). Threads: XLA {meta['threads']['xla_intra_op_threads']}, torch "
             f"{_torch_threads(result)}"
             + (f" (env {meta['threads']['env']})" if meta['threads']['env'] else "") +
             f". One modality: cost [d, d] + plan (epsilon {EPSILON}, "
             f"{ITERATIONS} iterations, no gradient through the plan) + aligned = z_m (T + Delta); "
             f"backward = gradients of sum(aligned * R) w.r.t. z_m, z_cf, Delta. Inputs "
             f"N(0, {INPUT_STD}^2). Time: median (min-max) after one warm-up (JAX compiles in "
             f"the warm-up). Peak: resident-set high-water mark during the timed runs minus the "
             f"resident set before them (fresh subprocess per cell; see the script's docstring). "
             f"'est.' = analytic estimate, for cells that were not run.\n\n")
    rows = []
    for c in result["cells"]:
        label = [c["items"], c["dim"], c["method"]]
        if c["status"] != "ok":
            est = c.get("estimate_bytes")
            rows.append(label + ["-", "-", f"est. {common.fmt_bytes(est)}" if est else "-", "-",
                                 f"**{c['status']}**: {c.get('reason', '')}"])
            continue
        f, b = c["phases"]["forward"], c["phases"]["forward+backward"]
        xla = c.get("xla_memory_analysis") or {}
        xla_b = (xla.get("forward+backward") or {})
        note = f"XLA temp+out {common.fmt_bytes(xla_b['temp_bytes'] + xla_b['output_bytes'])}" \
            if xla_b else ""
        rows.append(label + [_time(f), _time(b), _peak(f["peak_bytes"]), _peak(b["peak_bytes"]),
                             note])
    text += common.md_table(["I", "d", "method", "forward", "forward+backward", "peak fwd",
                             "peak fwd+bwd", "notes"], rows)
    if result.get("ratios"):
        text += "\nPeak-memory ratio, reference formulation / each JAX solver (forward+backward):\n\n"
        text += common.md_table(
            ["I", "d", "reference peak", "basis", "jax-reference peak", "ratio", "jax-ott peak",
             "ratio"],
            [[r["items"], r["dim"], common.fmt_bytes(r["reference_bytes"]), r["reference_basis"],
              common.fmt_bytes(r.get("jax-reference")), _ratio(r.get("ratio_jax-reference")),
              common.fmt_bytes(r.get("jax-ott")), _ratio(r.get("ratio_jax-ott"))]
             for r in result["ratios"]])
    if result.get("skipped"):
        text += "\nNot run: " + "; ".join(result["skipped"]) + "\n"
    return text


def _torch_threads(result: dict) -> str:
    found = {c["torch_threads"] for c in result["cells"] if "torch_threads" in c}
    return ", ".join(str(t) for t in sorted(found)) or "-"


def _time(phase: dict) -> str:
    t = phase["time_s"]
    return f"{common.fmt_seconds(t['median'])} ({common.fmt_seconds(t['min'])}-" \
           f"{common.fmt_seconds(t['max'])})"


def _peak(n: int) -> str:
    # the kernel's resident-set counters are exact to about 1 MiB (per-thread batching)
    return "< 1 MiB" if n < 2**20 else common.fmt_bytes(n)


def _ratio(x) -> str:
    return "-" if x is None else f"{x:.0f}x"


def peak_ratios(cells: list[dict]) -> list[dict]:
    """Reference (measured, else estimated) peak over each JAX method's measured peak."""
    by_key = {(c["method"], c["items"], c["dim"]): c for c in cells}
    out = []
    for (method, n, d), c in sorted(by_key.items()):
        if method != "torch-reference":
            continue
        if c["status"] == "ok":
            ref, basis = c["phases"]["forward+backward"]["peak_bytes"], "measured"
        else:
            ref, basis = c.get("estimate_bytes"), "estimated"
        row = {"items": n, "dim": d, "reference_bytes": ref, "reference_basis": basis}
        for jm in ("jax-reference", "jax-ott"):
            jc = by_key.get((jm, n, d))
            if jc and jc["status"] == "ok" and ref:
                peak = jc["phases"]["forward+backward"]["peak_bytes"]
                row[jm] = peak
                row[f"ratio_{jm}"] = ref / max(peak, 2**20)  # at most the 1 MiB resolution
        out.append(row)
    return out


def main(argv=None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", default="7050,18357,63001")
    parser.add_argument("--dims", default="64,200,600,800")
    parser.add_argument("--pairs", default="",
                        help="explicit I:d cells instead of --items x --dims, e.g. 7050:800,63001:200")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--reps", type=int, default=5, help="timed runs per phase (at most)")
    parser.add_argument("--max-seconds", type=float, default=10.0,
                        help="fewer timed runs when one run takes longer than this / reps")
    parser.add_argument("--timeout", type=float, default=600.0, help="per-cell subprocess limit")
    parser.add_argument("--wait-quiet-min", type=float, default=0.0)
    parser.add_argument("--out", default=str(common.RESULTS))
    parser.add_argument("--tag", default="")
    parser.add_argument("--cell", help=argparse.SUPPRESS)  # internal: METHOD,I,d in this process
    args = parser.parse_args(argv)

    if args.cell:
        method, n_items, dim = args.cell.split(",")
        print(json.dumps(run_cell(method, int(n_items), int(dim), args.reps, args.max_seconds)))
        return None

    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; expected some of {list(METHODS)}")
    if args.pairs:
        pairs = [tuple(int(v) for v in p.split(":")) for p in args.pairs.split(",") if p]
    else:
        pairs = [(int(n), int(d)) for n in args.items.split(",") for d in args.dims.split(",")]
    load = common.start_run(args.wait_quiet_min)
    result = {"meta": {"command": common.command_line(), "machine": common.machine_info(),
                       "threads": {**common.thread_info(), "busy_threads": common.busy_threads()},
                       "load": load, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       "settings": {"epsilon": EPSILON, "iterations": ITERATIONS,
                                                  "cost_scale": COST_SCALE,
                                                  "input_std": INPUT_STD}},
              "cells": [], "skipped": []}
    for n_items, dim in pairs:
        for method in methods:
            estimate = estimate_peak_bytes(method, n_items, dim)
            available = common.memory_available()
            if estimate + SMALL_OVERHEAD > FIT_FRACTION * available:
                cell = {"method": method, "items": n_items, "dim": dim,
                        "status": "does not fit", "estimate_bytes": estimate,
                        "reason": f"needs ~{common.fmt_bytes(estimate)}, "
                                  f"{common.fmt_bytes(available)} available"}
            else:
                cell = run_in_subprocess(method, n_items, dim, args.reps, args.max_seconds,
                                         args.timeout)
                cell["estimate_bytes"] = estimate
            cell["load_after"] = common.load_average()
            result["cells"].append(cell)
            if cell["status"] == "ok":
                f, b = cell["phases"]["forward"], cell["phases"]["forward+backward"]
                print(f"I={n_items:6d} d={dim:4d} {method:18s} fwd {_time(f):28s} "
                      f"fwd+bwd {_time(b):28s} peak {common.fmt_bytes(b['peak_bytes'])}",
                      flush=True)
            else:
                result["skipped"].append(f"I={n_items} d={dim} {method}: {cell['status']} "
                                         f"({cell.get('reason', '')})")
                print(f"I={n_items:6d} d={dim:4d} {method:18s} {cell['status']}: "
                      f"{cell.get('reason', '')}", flush=True)
    result["ratios"] = peak_ratios(result["cells"])
    return common.finish_run(args.out, f"alignment_cost{args.tag}", result, markdown, load)


if __name__ == "__main__":
    main()
