"""A whole sweep: check every group before anything is written, train group after group, write
sweep.json / sweep.md beside the members' folders."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from recgoat_jax import config as config_lib
from recgoat_jax.data.load import load_dataset, resolve_data
from recgoat_jax.io_utils import atomic_write_json, atomic_write_text
from recgoat_jax.models import build_model
from recgoat_jax.sweep import report
from recgoat_jax.sweep.engine import GroupTrainer
from recgoat_jax.sweep.spec import Member, SweepError, groups
from recgoat_jax.train import distributed, parallel
from recgoat_jax.train.preflight import check_run


def prepare(members: list[Member], max_group: int = 0
            ) -> list[tuple[list[Member], object, object]]:
    """(members, dataset, model) per group (`groups`: at most `max_group` members when > 0),
    every group checked (config against data, member count against devices, per-member keys
    against the model): raises before any file is written."""
    distributed.initialize(members[0].cfg.distributed)  # before any jax computation
    datasets: dict = {}
    planned = []
    for group in groups(members, max_group):
        base = resolve_data(group[0].cfg)
        key = repr(base.data)
        if key not in datasets:
            datasets[key] = load_dataset(base.data)
        dataset = datasets[key]
        check_run(base, dataset)
        n_dev = parallel.data_size(parallel.make_mesh(base.train.n_devices))
        if len(group) % n_dev:
            raise SweepError(f"a group of {len(group)} members ({group[0].name}, ...) cannot be "
                             f"split over {n_dev} devices: use a multiple of {n_dev} members "
                             "per group (seeds x configurations), or set train.n_devices")
        planned.append((group, dataset, build_model(base, dataset)))
    return planned


def plan(members: list[Member]) -> dict:
    """What a sweep trains, as sweep_plan.json records it (a resume must find the same)."""
    return {"members": [{"name": m.name, "config_id": m.config_id, "settings": list(m.settings),
                         "config": config_lib.to_dict(m.cfg)} for m in members]}


def same_plan(stored: dict, wanted: dict) -> bool:
    """Whether a stored sweep_plan.json describes the plan `wanted`. Config keys the package
    gained after the plan was written count as equal when `wanted` holds their default (an
    old sweep keeps resuming, and a finished one keeps being read, across such additions)."""
    old, new = stored.get("members", []), wanted["members"]
    if len(old) != len(new):
        return False
    for a, b in zip(old, new):
        if {k: a[k] for k in a if k != "config"} != {k: b[k] for k in b if k != "config"}:
            return False
        if not config_lib.same_stored_config(a["config"], b["config"]):
            return False
    return True


def run_sweep(members: list[Member], out: Path, progress: bool = True, command: str = "",
              resume: bool = False, overwrite: bool = False, max_group: int = 0,
              stop: Callable[[list[dict]], bool] | None = None,
              on_group_start: Callable[[int, list[Member]], None] | None = None) -> dict | None:
    """Train `members` into `out/<member.name>/`; returns sweep.json's content.

    Groups (at most `max_group` members each when > 0) are trained one after the other; with
    ``train.checkpoint_every > 0`` each saves checkpoints under
    `out/checkpoints/<first member>/`, and `resume` continues an interrupted sweep: finished
    groups are kept, the others continue from their newest checkpoint (a resume must use the
    same `max_group`: a checkpoint holds its group's members).

    `stop`, if given, sees the results (result.json contents) of every group finished so far
    after each group; when it returns True the sweep ends unfinished: None, no sweep.json (a
    later `resume` without `stop` completes it).

    `on_group_start(index, group)`, if given, is called before a group trains (1-based index;
    not for the groups a resume finds finished): the caller learns whether anything trained.
    """
    planned = prepare(members, max_group)
    plan_file = out / "sweep_plan.json"
    wanted = plan(members)
    if resume:
        if not plan_file.exists():
            raise SweepError(f"--resume: {out} holds no sweep (no sweep_plan.json)")
        if not same_plan(json.loads(plan_file.read_text()), json.loads(json.dumps(wanted))):
            raise SweepError(f"--resume: {plan_file} lists other members or configs than this "
                             "command: repeat the interrupted command with --resume")
    elif plan_file.exists() and not overwrite:
        raise SweepError(f"--out {out} holds an unfinished sweep: continue it with --resume, "
                         "replace it with --overwrite, or choose another --out")
    distributed.barrier("sweep: --out checked")  # before process 0 writes into it
    main = distributed.is_main_process()  # with several processes only process 0 writes
    if main:
        if overwrite and out.is_dir():
            for child in out.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        out.mkdir(parents=True, exist_ok=True)
        for name in ("sweep.json", "sweep.md"):
            (out / name).unlink(missing_ok=True)
        atomic_write_json(plan_file, wanted)
    results: dict[str, dict] = {}
    for index, (group, dataset, model) in enumerate(planned, 1):
        finished = _finished_results(out, group) if resume else None
        if finished:
            results.update(finished)
            if stop is not None and index < len(planned) and stop(list(results.values())):
                return None
            continue
        if on_group_start is not None:
            on_group_start(index, group)
        cfgs = [resolve_data(m.cfg) for m in group]
        trainer = GroupTrainer(cfgs, dataset, model=model)
        bar = tqdm(total=cfgs[0].train.epochs, disable=not progress or not main,
                   dynamic_ncols=True,
                   desc=f"group {index}/{len(planned)} {model.name} x{len(group)}")

        def tick(running, best, bar=bar):
            bar.update(1)
            bar.set_postfix(running=running, best_valid=f"{best:.4f}")

        checkpoints = out / "checkpoints" / group[0].name
        if not resume and main:
            for m in group:
                if (out / m.name).is_dir():
                    shutil.rmtree(out / m.name)
        group_results = trainer.run([out / m.name for m in group], progress=tick,
                                    checkpoint_dir=checkpoints,
                                    checkpoint_every=cfgs[0].train.checkpoint_every,
                                    resume=resume)
        bar.close()
        results.update({m.name: r for m, r in zip(group, group_results)})
        if stop is not None and index < len(planned) and stop(list(results.values())):
            return None
    metric = config_lib.selection_metric(members[0].cfg)
    summary = report.summarise(members, [results[m.name] for m in members], metric)
    summary["command"] = command
    summary["groups"] = [[m.name for m in group] for group, _, _ in planned]
    if main:
        atomic_write_json(out / "sweep.json", summary)
        atomic_write_text(out / "sweep.md", report.markdown(summary, f"Sweep {out.name}"))
    return summary


def _finished_results(out: Path, group: list[Member]) -> dict | None:
    """The result.json of every member of a group that finished before an interruption."""
    files = [out / m.name / "result.json" for m in group]
    if not all(f.exists() for f in files):
        return None
    return {m.name: json.loads(f.read_text()) for m, f in zip(group, files)}
