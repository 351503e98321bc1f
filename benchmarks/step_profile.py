"""Where a training step's time goes, measured inside the compiled epoch.

Runs the model's jitted epoch (the package's Trainer, as benchmarks/epoch_time.py builds it)
on `--batches` batches under `jax.profiler`, then attributes every executed XLA thunk to a
component through the HLO `op_name` of the instruction it runs (flax module paths such as
``branch_image/gat_0`` and the named scopes ``propagation``, ``infonce``, ``ot_loss``,
``bpr`` and ``optimizer``). Unlike timing a component alone (benchmarks/roofline.py
`--components`), this sees the step as XLA fused and scheduled it.

Caveat, measured: custom calls that hand their work to another thread (jaxlib's CPU CSR
kernel) record only their dispatch; their time appears as ``SlinkyThreadPool::Await`` under
"runtime" instead of their component.

Usage (repository root):
  python3 -m benchmarks.step_profile [--models recgoat] [--dims 64,256] [--batches 4]
      [--config NAME_OR_TOML] [--set KEY=VALUE] [--out benchmarks/results] [--tag TAG]
Writes <out>/step_profile<tag>.json and .md.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import tempfile
import time

import numpy as np

from benchmarks import common

RUNTIME = ("ThunkExecutor", "$", "H2D", "D2H", "Pjit", "PjitFunction")
CONTROL = ("while", "call", "conditional")  # parents of the thunks they run: not counted


def component_of(op_name: str) -> str:
    """Component of one HLO instruction from its op_name ('jit(epoch_fn)/.../gat_0/gather')."""
    branch = re.search(r"/(user_branch|branch)_(\w+?)/", op_name)
    if branch:
        kind = "user branch" if branch.group(1) == "user_branch" else "branch"
        part = "projection" if "/proj/" in op_name else "gat"
        return f"{part}[{branch.group(2)}]" if kind == "branch" else f"user {part}[{branch.group(2)}]"
    for scope, name in (("/fuse/", "fusion + OAT"), ("propagation", "propagation"),
                        ("infonce", "infonce"), ("ot_loss", "ot loss"),
                        ("/bpr", "bpr/l2/batch rows"),
                        ("optimizer", "adam")):
        if scope in op_name:
            return name
    return "other"


def op_names(hlo_text: str) -> dict[str, str]:
    """{instruction name: op_name} of a compiled module's HLO text."""
    pattern = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = [^\n]*?metadata=\{op_name=\"([^\"]*)\"",
                         re.M)
    return {m.group(1): m.group(2) for m in pattern.finditer(hlo_text)}


def thunk_seconds(trace_dir: str) -> dict[str, float]:
    """{thunk name: total seconds} of the leaf events of the perfetto trace in trace_dir."""
    path = sorted(glob.glob(f"{trace_dir}/**/*.json.gz", recursive=True))[-1]
    events = json.load(gzip.open(path))["traceEvents"]
    total: dict[str, float] = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and not e["name"].startswith(RUNTIME + CONTROL):
            total[e["name"]] += e.get("dur", 0) / 1e6
    return dict(total)


def profile_setting(model: str, dim: int, dataset, args) -> dict:
    import jax

    from benchmarks.epoch_time import CONFIGS, MODELS, JaxRunner
    from recgoat_jax import config as config_lib

    config = args.config or MODELS[model][0]  # a preset name or path, or the benchmark's file
    cfg = config_lib.load(args.config or CONFIGS / config,
                          [f"model.dim={dim}", "train.epochs=1"] + list(args.set or []))
    n_pairs = args.batches * cfg.train.batch_size
    pairs = dataset.train[np.random.default_rng(0).permutation(len(dataset.train))[:n_pairs]]
    runner = JaxRunner(cfg, dataset, pairs)
    runner.epoch()  # warm-up
    wall = min(runner.epoch()[0] for _ in range(2))
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
        traced_wall = runner.epoch()[0]
        jax.profiler.stop_trace()
        thunks = thunk_seconds(trace_dir)
    names = op_names(runner.compiled.as_text())
    per_component: dict[str, float] = collections.Counter()
    top: dict[str, list] = collections.defaultdict(list)
    for thunk, seconds in thunks.items():
        op = names.get(thunk, "")
        comp = component_of(op) if op else "runtime"
        per_component[comp] += seconds / args.batches
        top[comp].append((seconds / args.batches, thunk, op.split("closed_call/")[-1][:90]))
    return {"model": model, "config": str(config), "dim": dim,
            "batches": args.batches,
            "step_wall_s": wall / args.batches, "traced_step_wall_s": traced_wall / args.batches,
            "per_component_s": dict(sorted(per_component.items(), key=lambda kv: -kv[1])),
            "top_thunks": {c: sorted(v, reverse=True)[:8] for c, v in top.items()}}


def markdown(result: dict) -> str:
    meta = result["meta"]
    text = common.run_header("Where a training step's time goes (profiled in the compiled epoch)",
                             meta)
    text += ("\nEach executed XLA thunk is attributed to a component by the op_name of its HLO "
             "instruction; times are per batch (the traced epoch / batches). 'runtime' holds "
             "thunks without an op_name and the thread-pool waits, where the CPU CSR kernel's "
             "work lands (its thunk records only the dispatch).\n")
    for s in result["settings"]:
        text += (f"\n## {s['model']}, d = {s['dim']}\n\n"
                 f"Config: `{s['config']}`. Step: {common.fmt_seconds(s['step_wall_s'])}"
                 f" per batch untraced (best of 2 epochs of {s['batches']} batches), "
                 f"{common.fmt_seconds(s['traced_step_wall_s'])} traced.\n\n")
        total = sum(s["per_component_s"].values())
        rows = [[c, common.fmt_seconds(v), f"{100 * v / total:.0f}%"]
                for c, v in s["per_component_s"].items()]
        text += common.md_table(["component", "time / batch", "share"], rows)
        for comp in [c for c in s["per_component_s"] if c.startswith(("gat", "infonce"))]:
            text += f"\nLargest thunks of {comp}:\n\n"
            text += common.md_table(["time / batch", "thunk", "op"], [
                [common.fmt_seconds(t), f"`{n}`", f"`{op}`"] for t, n, op in s["top_thunks"][comp]])
    return text


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="recgoat")
    parser.add_argument("--dims", default="64,256")
    parser.add_argument("--batches", type=int, default=4, help="batches per profiled epoch")
    common.add_data_args(parser)
    parser.add_argument("--config", help="config (a packaged preset name or a TOML path) "
                        "instead of the model's benchmark config, e.g. recgoat-paper")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override")
    parser.add_argument("--wait-quiet-min", type=float, default=0.0)
    parser.add_argument("--out", default=str(common.RESULTS))
    parser.add_argument("--tag", default="")
    args = parser.parse_args(argv)
    load = common.start_run(args.wait_quiet_min)
    dataset = common.load_dataset(args.preset, args.data_format, args.data_path, args.data_name)
    result = {"meta": {"command": common.command_line(), "machine": common.machine_info(),
                       "threads": common.thread_info(), "load": load,
                       "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
              "settings": []}
    for model in [m for m in args.models.split(",") if m]:
        for dim in [int(d) for d in args.dims.split(",")]:
            setting = profile_setting(model, dim, dataset, args)
            print(f"{model} d={dim}: step {setting['step_wall_s']:.3f} s; "
                  + ", ".join(f"{c} {v * 1e3:.0f} ms"
                              for c, v in setting["per_component_s"].items()), flush=True)
            result["settings"].append(setting)
    return common.finish_run(args.out, f"step_profile{args.tag}", result, markdown, load)


if __name__ == "__main__":
    main()
