"""Many training runs ("members") as one program: S members of one sweep group trained by the
sweep engine (`recgoat_jax.sweep.GroupTrainer`: one compiled epoch over stacked states), against
the same S members trained one after the other by solo runs (`recgoat_jax.train.loop.Trainer`),
in the same process, on the same device.

The group is timed in two layouts of its member axis (`train.sweep_vmap`): "one by one" (1:
the members one after another inside the compiled program, each running its solo program; the
CPU default) and "vmapped" (S: all members batched by `jax.vmap`; the accelerator default).

Per model, S and layout: member-epochs per second, the ratio to the sequential solo runs (> 1:
the group beats its members run one after the other), the compile time (the first epoch minus
a steady one), the peak resident set of the cell (VmHWM, reset before the cell) and the largest
relative difference between a member's epoch losses and its solo run's.

    python3 -m benchmarks.sweep_throughput --out benchmarks/results          # small, full
    python3 -m benchmarks.sweep_throughput --preset baby --members-recgoat 1,2 --tag _baby \
        --out benchmarks/results
    python3 -m benchmarks.sweep_throughput --devices 8 --members-lightgcn 8,16 \
        --members-recgoat 8 --tag _8cpu --out benchmarks/results   # member axis on 8 devices
    python3 -m benchmarks.sweep_throughput --smoke                            # tiny, < 1 min
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

from benchmarks import common

DEFAULT_MEMBERS = {"lightgcn": "1,2,4,8,16", "recgoat": "1,2,4"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="lightgcn,recgoat", help="comma list: lightgcn, recgoat")
    p.add_argument("--preset", default="small", help="synthetic preset (default small)")
    p.add_argument("--members-lightgcn", default=DEFAULT_MEMBERS["lightgcn"])
    p.add_argument("--members-recgoat", default=DEFAULT_MEMBERS["recgoat"])
    p.add_argument("--epochs", type=int, default=3, help="timed epochs after the compiling one")
    p.add_argument("--layouts", default="one_by_one,vmapped",
                   help="comma list of group layouts to time: one_by_one, vmapped")
    p.add_argument("--max-cell-s", type=float, default=300.0,
                   help="stop raising S for a model once one S took longer than this")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every model")
    p.add_argument("--devices", type=int, default=1,
                   help="devices the group's member axis is sharded over (solo runs: 1); "
                        "without an accelerator, forced host devices sharing the CPU cores "
                        "(XLA_FLAGS, set before jax loads): they show the sharding, not a speed-up")
    p.add_argument("--smoke", action="store_true",
                   help="tiny preset, S in {D, 2D} (D = --devices), one timed epoch, no "
                        "waiting (< 1 min)")
    p.add_argument("--wait-quiet-min", type=float, default=10.0,
                   help="wait at most this long for the 1-minute load average to drop below 1.5")
    p.add_argument("--out", default="", help="folder for sweep_throughput{tag}.{json,md}")
    p.add_argument("--tag", default="")
    args = p.parse_args(argv)
    if args.smoke:
        args.preset, args.epochs, args.wait_quiet_min = "tiny", 1, 0.0
        args.members_lightgcn = args.members_recgoat = f"{args.devices},{2 * args.devices}"
    return args


def _epochs(step, state, n: int):
    """The compiling epoch, then n timed ones: (state, compile s, seconds, losses)."""
    t0 = time.perf_counter()
    state, stats = step(state)
    first = time.perf_counter() - t0
    losses, t0 = [stats["loss"]], time.perf_counter()
    for _ in range(n):
        state, stats = step(state)
        losses.append(stats["loss"])
    seconds = time.perf_counter() - t0
    return state, max(first - seconds / max(n, 1), 0.0), seconds, losses


def bench_cell(name: str, size: int, dataset, args) -> dict:
    import numpy as np

    from recgoat_jax import config as C
    from recgoat_jax.sweep import GroupTrainer
    from recgoat_jax.train.loop import Trainer

    cfgs = [C.load(name, [f'data.preset="{args.preset}"', "train.n_devices=1", *args.set,
                          f"train.seed={seed}"]) for seed in range(size)]
    common.reset_peak_rss()
    t_cell = time.perf_counter()
    sequential, compile_solo, solo_losses = 0.0, 0.0, []
    for cfg in cfgs:
        trainer = Trainer(cfg, dataset)

        def solo_step(state, trainer=trainer):
            state, stats, _ = trainer.train_epoch(state)
            return state, stats

        _, compile_s, seconds, losses = _epochs(solo_step, trainer.init_state(), args.epochs)
        sequential += seconds
        compile_solo = max(compile_solo, compile_s)
        solo_losses.append(losses)
    cell = {"members": size, "sequential_member_epochs_per_s": size * args.epochs / sequential,
            "compile_solo_s": compile_solo, "layouts": {}}
    for layout in args.layouts.split(","):
        vmap = {"one_by_one": 1, "vmapped": size}[layout]
        group = GroupTrainer([C.replace(c, **{"train.sweep_vmap": vmap,
                                              "train.n_devices": args.devices}) for c in cfgs],
                             dataset)
        active = np.ones(size, bool)

        def group_step(state, group=group, active=active):
            state, stats, _ = group.train_epoch(state, active)
            return state, {"loss": stats["loss"]}

        _, compile_group, grouped, group_losses = _epochs(group_step, group.init_state(),
                                                          args.epochs)
        diffs = [abs(float(g[s]) - solo_losses[s][e]) / abs(solo_losses[s][e])
                 for e, g in enumerate(group_losses) for s in range(size)]
        cell["layouts"][layout] = {"member_epochs_per_s": size * args.epochs / grouped,
                                   "ratio": sequential / grouped, "compile_s": compile_group,
                                   "max_rel_loss_diff": max(diffs)}
        del group
    cell["peak_rss_bytes"] = common.peak_rss_bytes()
    cell["cell_seconds"] = time.perf_counter() - t_cell
    return cell


def _warm_up(name: str, dataset, args) -> None:
    """Two untimed solo epochs and a one-member group's: the first cell of a process ran up to
    25% slower than the same cell later (allocator and page warm-up), which skewed S = 1."""
    import numpy as np

    from recgoat_jax import config as C
    from recgoat_jax.sweep import GroupTrainer
    from recgoat_jax.train.loop import Trainer

    cfg = C.load(name, [f'data.preset="{args.preset}"', "train.n_devices=1", *args.set])
    trainer = Trainer(cfg, dataset)
    state = trainer.init_state()
    for _ in range(2):
        state, _, _ = trainer.train_epoch(state)
    group = GroupTrainer([cfg], dataset)
    group.train_epoch(group.init_state(), np.ones(1, bool))


def bench_model(name: str, sizes: list[int], args, log=print) -> dict:
    from recgoat_jax import config as C
    from recgoat_jax.data.synthetic import generate

    dataset = generate(args.preset)
    cfg = C.load(name, [f'data.preset="{args.preset}"', *args.set])
    _warm_up(name, dataset, args)
    cells = []
    for size in sizes:
        cell = bench_cell(name, size, dataset, args)
        log(f"{name} S={size}: " + ", ".join(f"{k} {v['ratio']:.2f}x" for k, v in
                                              cell["layouts"].items()) +
            f" ({cell['cell_seconds']:.0f} s)")
        cells.append(cell)
        if cell["cell_seconds"] > args.max_cell_s:
            break
    return {"model": name, "preset": args.preset, "n_users": dataset.n_users,
            "n_items": dataset.n_items, "n_train": len(dataset.train), "dim": cfg.model.dim,
            "batch_size": cfg.train.batch_size, "cells": cells}


def to_markdown(result: dict) -> str:
    meta = result["meta"]
    lines = [common.run_header("Sweep throughput: S members as one program", meta)]
    warn = common.load_warning([meta["load"]["before"]], [meta["load"]["after"]],
                               own_threads=meta["own_threads"])
    if warn:
        lines.append(warn + "\n")
    lines.append(f"Timed: {meta['epochs']} epochs after the compiling one. member-epochs/s = "
                 "S x epochs / seconds; ratio = sequential time / group time (> 1: the group "
                 "is faster than its members one after the other). "
                 f"Group on {meta.get('devices', 1)} device(s) "
                 f"({meta.get('device_kind', '')}), solo runs on one. Layouts of the "
                 "group: one by one = `train.sweep_vmap=1` (each member runs its solo program "
                 "inside the group's; the CPU default), vmapped = `train.sweep_vmap=S`.\n")
    for model in result["models"]:
        layouts = list(model["cells"][0]["layouts"])
        headers = ["S", "sequential m-ep/s"] + [h.format(k.replace("_", " ")) for k in layouts
                                                for h in ("{} m-ep/s", "{} ratio")]
        headers += ["solo compile"] + [f"{k.replace('_', ' ')} compile" for k in layouts]
        headers += ["peak RSS (cell)"] + [f"{k.replace('_', ' ')} max rel loss diff"
                                          for k in layouts]
        lines.append(f"## {model['model']} ({model['preset']}: {model['n_users']} users, "
                     f"{model['n_items']} items, {model['n_train']} training pairs; d = "
                     f"{model['dim']}, batch {model['batch_size']})\n")
        rows = []
        for c in model["cells"]:
            g = c["layouts"]
            rows.append([c["members"], f"{c['sequential_member_epochs_per_s']:.3f}"] +
                        [x for k in layouts for x in (f"{g[k]['member_epochs_per_s']:.3f}",
                                                      f"**{g[k]['ratio']:.2f}x**")] +
                        [common.fmt_seconds(c["compile_solo_s"])] +
                        [common.fmt_seconds(g[k]["compile_s"]) for k in layouts] +
                        [common.fmt_bytes(c["peak_rss_bytes"])] +
                        [f"{g[k]['max_rel_loss_diff']:.1e}" for k in layouts])
        lines.append(common.md_table(headers, rows))
    return "\n".join(lines)


def main(argv=None, log=print) -> dict:
    args = parse_args(argv)
    command = "python3 -m benchmarks.sweep_throughput " + " ".join(
        argv if argv is not None else sys.argv[1:])
    wait = common.wait_for_quiet(args.wait_quiet_min * 60, log=log)
    before = common.load_average()
    log(f"load average before: {before}")
    if args.devices > 1:  # only touches the host platform: accelerators are used as they are
        flag = f"--xla_force_host_platform_device_count={args.devices}"
        os.environ["XLA_FLAGS"] = " ".join(x for x in (os.environ.get("XLA_FLAGS", ""), flag)
                                           if x)
    import jax

    models = [bench_model(name, [int(v) for v in getattr(args, f"members_{name}").split(",")],
                          args, log=log) for name in args.models.split(",")]
    result = {"meta": {"command": command.strip(),
                       "time": datetime.datetime.now().isoformat(timespec="seconds"),
                       "load": {"before": before, "after": common.load_average(),
                                "wait": wait},
                       "own_threads": common.busy_threads(),
                       "epochs": args.epochs, "jax_version": jax.__version__,
                       "devices": args.devices, "device_kind": jax.devices()[0].device_kind,
                       "machine": common.machine_info(), "threads": common.thread_info()},
              "models": models}
    if args.out:
        json_path, md_path = common.write_results(args.out, "sweep_throughput" + args.tag,
                                                  result, to_markdown(result))
        log(f"wrote {json_path} and {md_path}")
    return result


if __name__ == "__main__":
    main()
