"""Issue #14's protocol for one data setting: every model tuned with the same budget and
chosen on valid, then the chosen configuration trained to convergence on other data splits.

    python experiments/protocol.py --setting small_informative
    python experiments/protocol.py --setting small_noise
    python experiments/protocol.py --setting longtail
    python experiments/protocol.py --setting ml100k --data-path /tmp/ml100k_work/ml-100k

Models (`MODELS`): popularity, mf, lightgcn, recgoat-reference, recgoat-paper, recgoat (the
default configuration with the paper's user side, ``model.user_side=true``) and
recgoat-no-user-side (the same without it, ``model.user_side=false``), each from its packaged
config, with the same stopping rule for all (`SHARED`). The two `recgoat` rows set the user
side explicitly: the shipped default (experiments/configs/recgoat.toml) became the
no-user-side winner on ML-100K, and the rows keep training what they trained before.

1. Tuning: `--budget` N configurations per trainable model, drawn log-uniformly by the sweep
   engine's random search (`recgoat_jax.sweep.spec.configurations`) over `BASE_SPACE`
   (train.lr, loss.decay); the RecGOAT variants also draw `RECGOAT_SPACE` (loss.cl_weight,
   loss.temperature) from a second stream, so every model sees the SAME N (lr, decay) points.
   They train on data seed `--tune-seed` with train seed 0 as one sweep group (all keys are
   per-member: one compilation), and the sweep's winner on valid is chosen. Popularity has
   nothing to tune.
2. Final: the chosen configuration on `--splits` other data seeds (tune seed + 1, + 2, ...)
   x `--seeds` train seeds (popularity: the first train seed only; it is deterministic).
   A run whose ``epochs_run`` reached ``train.epochs`` did not stop early and is counted
   "at cap" (a run stopping exactly at the cap counts too). With `--raise-cap`, a model
   with any run at the cap has its whole final sweep rerun with twice the cap (a new folder
   ``final/<model>_cap<E>``), up to `MAX_RAISES` times, as soon as the group holding that
   run finishes (the sweep's remaining groups at the old cap are skipped); its row then
   reports the last one (later invocations, with or without the flag, keep using the raised
   folders). When the chosen configuration's own tuning run reached the cap, --raise-cap
   starts its final at twice the cap (unless a final at the base cap was already started).
3. Report: ``<results-dir>/<setting>.{json,md}`` (default experiments/results/protocol):
   test Recall / NDCG @ 10 / 20 mean ± std per model, the paired difference to LightGCN per
   split with a 95% t interval (`protocol_report`), cap hits, wall and epoch times, the
   chosen and resolved configs, the command, the git commit and the date. Rewritten after
   every sweep; marked PARTIAL at the top while any model's runs are missing.

Restartable: sweeps live under ``--runs-dir`` as ``tune/<model>`` and
``final/<model>[_cap<E>]``. The default, ``experiments/results/protocol/runs/<setting>``, is
committed without its large files (parameters, checkpoints, logs: see .gitignore), so a fresh
checkout continues the protocol where the last one stopped and every reported number keeps
its run's result.json and config.toml beside it. A sweep with its sweep.json is loaded, never
retrained; an interrupted one continues with the engine's resume (finished groups kept, the
others from their newest checkpoint, ``train.checkpoint_every`` = `--checkpoint-every`).
Checkpoints are not committed, so on a fresh checkout only finished groups count: with
`--max-group` N a sweep trains N members at a time (N = 2 keeps a RecGOAT tuning chunk on
`small` within about half an hour here), and every finished chunk is kept. A folder holding a
sweep of other members (e.g. another --budget) is refused, not overwritten.
Every model of `MODELS` is in the report: the ones outside ``--models`` are read from disk.

ML-100K: `--data-path` is the folder `experiments/movielens/run.py --prepare-only` writes
(ml-100k.inter / .item). Each data seed gets its own folder ``<runs-dir>/data/split<seed>``,
prepared by that script's `prepare` (the split, MiniLM item text, template profiles from
that split's TRAINING items, so no profile sees its split's valid / test items; needs the
``encode`` extra). That data is never committed (MovieLens' license): it lives under
``--data-dir`` (default runs/protocol_data/<setting>, outside the committed runs).
"""

# No `from __future__ import annotations`: the dataclasses below must also build when a test
# imports this file by path (not in sys.modules).
import argparse
import dataclasses
import datetime
import importlib.util
import json
import shlex
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Run from a checkout without `pip install -e .`: the repository root holds the package.
sys.path.insert(0, str(ROOT))

from recgoat_jax import config as config_lib  # noqa: E402 (after the path set-up)
from recgoat_jax.config import ConfigError  # noqa: E402
from recgoat_jax.data.dataset import DataError  # noqa: E402
from recgoat_jax.data.load import resolve_data  # noqa: E402
from recgoat_jax.io_utils import atomic_write_json, atomic_write_text  # noqa: E402
from recgoat_jax.sweep import run as sweep_run  # noqa: E402
from recgoat_jax.train.checkpoint import CheckpointError  # noqa: E402
from recgoat_jax.sweep.spec import (Member, SweepError, configurations, expand,  # noqa: E402
                                    parse_random)


def _load_sibling(name: str):
    """A module of experiments/ by file (experiments/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"_protocol_{name.replace('/', '_')}",
                                                  HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


report_lib = _load_sibling("protocol_report")

SETTINGS = {  # data overrides of each synthetic setting; ml100k reads --data-path
    "small_informative": ("data.preset=small",),
    "small_noise": ("data.preset=small", "data.feature_signal=0"),
    "longtail": ("data.preset=longtail",),
    "ml100k": None,
}
ML100K = "ml-100k"
# Adam's learning rate around the configs' 8e-4..5e-3 (below 5e-4 no model converges within a
# 100-epoch cap here), L2 decay, and RecGOAT's contrastive weight and InfoNCE temperature.
BASE_SPACE = ("train.lr=5e-4:2e-2:log", "loss.decay=1e-6:1e-2:log")
RECGOAT_SPACE = ("loss.cl_weight=1e-2:0.5:log", "loss.temperature=0.05:1:log")
SHARED = ("eval.protocol=mmrec", "eval.every=5", "eval.patience=3")  # one stopping rule
SMOKE = ("eval.every=1", "eval.patience=1")
MAX_RAISES = 3  # --raise-cap doubles the cap at most this often (100 -> 800)


@dataclasses.dataclass(frozen=True)
class Model:
    """One compared model: a packaged config, its overrides and its search space."""

    name: str
    config: str
    overrides: tuple[str, ...] = ()
    space: tuple[str, ...] = BASE_SPACE
    trainable: bool = True


MODELS = (
    Model("popularity", "popularity", space=(), trainable=False),
    Model("mf", "mf"),
    Model("lightgcn", "lightgcn"),
    Model("recgoat-reference", "recgoat-reference", space=BASE_SPACE + RECGOAT_SPACE),
    Model("recgoat-paper", "recgoat-paper", space=BASE_SPACE + RECGOAT_SPACE),
    Model("recgoat", "recgoat", ("model.user_side=true",), space=BASE_SPACE + RECGOAT_SPACE),
    Model("recgoat-no-user-side", "recgoat", ("model.user_side=false",),
          space=BASE_SPACE + RECGOAT_SPACE),
)


SOLO = ("popularity",)  # model.name of the models without parameters: solo runs, no sweep


class ProtocolError(Exception):
    """Bad input or a runs folder that does not fit the command; one line for the user."""


@dataclasses.dataclass
class Context:
    """The resolved command line."""

    setting: str
    budget: int
    sample_seed: int
    tune_seed: int
    split_seeds: list[int]
    train_seeds: list[int]
    epochs: int
    models: list[str]
    runs_dir: Path
    data_dir: Path
    results_dir: Path
    data_path: Path | None
    raise_cap: bool
    checkpoint_every: int
    max_group: int
    devices: int
    smoke: bool
    report_only: bool
    progress: bool
    command: str
    trained: int = 0  # sweeps trained by this invocation
    encoder: object = None  # ML-100K: the MiniLM encoder, loaded once


# ----------------------------------------------------------------------------- command line

def parse_args(argv: list[str] | None) -> Context:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--setting", required=True, choices=list(SETTINGS))
    p.add_argument("--data-path", help="ml100k: the prepared ml-100k folder "
                                       "(experiments/movielens/run.py --prepare-only)")
    p.add_argument("--budget", type=int, default=8, help="configurations per trainable model")
    p.add_argument("--sample-seed", type=int, default=0, help="seed of the random search")
    p.add_argument("--tune-seed", type=int, default=2025, help="data seed of the tuning split")
    p.add_argument("--splits", type=int, default=3, help="final data splits (other seeds)")
    p.add_argument("--seeds", type=int, default=2, help="final train seeds per split")
    p.add_argument("--epochs", type=int, default=100, help="epoch cap (train.epochs)")
    p.add_argument("--raise-cap", action="store_true",
                   help="rerun a model's final sweep with twice the cap while a run hits it")
    p.add_argument("--models", help=f"comma-separated subset of {[m.name for m in MODELS]}")
    p.add_argument("--runs-dir", help="default experiments/results/protocol/runs/<setting> "
                                      "(with --smoke: runs/protocol/<setting>_smoke)")
    p.add_argument("--data-dir", help="ml100k: where each split's prepared data goes (default "
                                      "runs/protocol_data/<setting>; never committed)")
    p.add_argument("--results-dir", help="default experiments/results/protocol "
                                         "(with --smoke: <runs-dir>/results)")
    p.add_argument("--devices", type=int, default=1,
                   help="train.n_devices: devices a sweep group's members are split over (each "
                        "group's member count must be a multiple; 1 always fits)")
    p.add_argument("--checkpoint-every", type=int, default=10,
                   help="epochs between group checkpoints (resume point); 0 = none")
    p.add_argument("--max-group", type=int, default=0, metavar="N",
                   help="train at most N members of a sweep at once (chunks one after the "
                        "other, each kept when finished); 0 (default): a whole group at once")
    p.add_argument("--smoke", action="store_true", help="tiny preset, budget 2, 1 split, "
                                                        "1 seed, 4 epochs (for the test)")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: write the tables from the runs folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    return _context(args, argv if argv is not None else sys.argv[1:])


def _context(args, argv: list[str]) -> Context:
    names = [m.name for m in MODELS]
    models = [s.strip() for s in args.models.split(",")] if args.models else names
    for name in models:
        if name not in names:
            raise ProtocolError(f"--models {name}: unknown model; expected some of {names}")
    for flag, value in (("--budget", args.budget), ("--splits", args.splits),
                        ("--seeds", args.seeds), ("--epochs", args.epochs)):
        if value < 1:
            raise ProtocolError(f"{flag} {value}: expected >= 1")
    if args.devices < 1:
        raise ProtocolError(f"--devices {args.devices}: expected >= 1")
    if args.checkpoint_every < 0:
        raise ProtocolError(f"--checkpoint-every {args.checkpoint_every}: expected >= 0")
    if args.max_group < 0:
        raise ProtocolError(f"--max-group {args.max_group}: expected >= 0 (0: no limit)")
    data_path = None
    if args.setting == "ml100k":
        if args.smoke:
            raise ProtocolError("--smoke: runs on a synthetic --setting, not ml100k")
        data_path = _check_ml100k(args.data_path)
    elif args.data_path:
        raise ProtocolError(f"--data-path: only --setting ml100k reads files "
                            f"(--setting {args.setting} is synthetic)")
    budget, splits, seeds, epochs = args.budget, args.splits, args.seeds, args.epochs
    if args.smoke:
        budget, splits, seeds, epochs = 2, 1, 1, 4
    default_runs = (Path("runs/protocol") / f"{args.setting}_smoke" if args.smoke
                    else HERE / "results" / "protocol" / "runs" / args.setting)
    runs = Path(args.runs_dir) if args.runs_dir else default_runs
    data_dir = Path(args.data_dir or Path("runs/protocol_data") / args.setting)
    results = Path(args.results_dir) if args.results_dir else (
        runs / "results" if args.smoke else HERE / "results" / "protocol")
    return Context(
        setting=args.setting, budget=budget, sample_seed=args.sample_seed,
        tune_seed=args.tune_seed,
        split_seeds=[args.tune_seed + k for k in range(1, splits + 1)],
        train_seeds=list(range(seeds)), epochs=epochs, models=models, runs_dir=runs,
        data_dir=data_dir, results_dir=results, data_path=data_path, raise_cap=args.raise_cap,
        checkpoint_every=0 if args.smoke else args.checkpoint_every, devices=args.devices,
        max_group=args.max_group,
        smoke=args.smoke,
        report_only=args.report_only, progress=not args.quiet,
        command=shlex.join(["python", "experiments/protocol.py", *argv]))


def _check_ml100k(path: str | None) -> Path:
    if not path:
        raise ProtocolError("--setting ml100k needs --data-path (the ml-100k folder of "
                            "experiments/movielens/run.py --prepare-only)")
    folder = Path(path).expanduser().resolve()
    for name in (f"{ML100K}.inter", f"{ML100K}.item"):
        if not (folder / name).is_file():
            raise ProtocolError(f"--data-path {path}: no {name} there (prepare it with "
                                "experiments/movielens/run.py SOURCE --prepare-only)")
    return folder


# ----------------------------------------------------------------------------- members

def search_space(model: Model, budget: int, sample_seed: int) -> list[tuple[str, ...]]:
    """The model's `budget` configurations (override tuples): BASE_SPACE's draws are the same
    for every model; the rest of its space comes from a second stream (sample_seed + 1)."""
    if not model.trainable:
        return [()]
    base = configurations([], parse_random(list(BASE_SPACE)), budget, sample_seed)
    extra_keys = [s for s in model.space if s not in BASE_SPACE]
    if not extra_keys:
        return base
    extra = configurations([], parse_random(extra_keys), budget, sample_seed + 1)
    return [b + e for b, e in zip(base, extra)]


def data_overrides(ctx: Context, data_seed: int, prepare: bool) -> list[str]:
    """The data settings of one split: the synthetic preset, or ML-100K's split folder
    (prepared first when missing and `prepare`)."""
    if ctx.setting != "ml100k":
        preset = list(SETTINGS[ctx.setting])
        return preset + ["data.preset=tiny"] if ctx.smoke else preset
    folder = ml100k_split(ctx, data_seed, prepare)
    return ["data.format=recbole", f"data.path={folder}", f"data.name={ML100K}"]


def ml100k_split(ctx: Context, data_seed: int, prepare: bool) -> Path:
    """``<data-dir>/split<seed>/ml-100k``, prepared on first use when `prepare`."""
    work = (ctx.data_dir / f"split{data_seed}").resolve()
    folder = work / ML100K
    done = folder / "prepare.json"
    if done.exists() and json.loads(done.read_text()).get("data_seed") == data_seed:
        return folder
    if not prepare:
        return folder
    movielens = _load_sibling("movielens/run")
    if ctx.encoder is None:
        try:
            ctx.encoder = movielens.minilm_encoder()
        except ImportError as e:
            raise ProtocolError(f"--setting ml100k: {e}") from None
    print(f"preparing ML-100K split {data_seed} in {work}", file=sys.stderr)
    return movielens.prepare(ctx.data_path, work, data_seed=data_seed, encoder=ctx.encoder)


def build_members(ctx: Context, model: Model, configs: list[tuple[str, ...]],
                  data_seeds: list[int], train_seeds: list[int], epochs: int,
                  train: bool) -> list[Member]:
    """configs x data seeds x train seeds of one model, with the protocol's shared settings
    (`train`: the members are about to be trained, so their data must exist)."""
    shared = [*SHARED, *(SMOKE if ctx.smoke else ()), *model.overrides,
              f"train.n_devices={ctx.devices}"]
    if model.trainable:
        shared += [f"train.epochs={epochs}", f"train.checkpoint_every={ctx.checkpoint_every}"]
    members = []
    for data_seed in data_seeds:  # one expand per split: ML-100K's data.path differs
        members += expand(model.config, [*data_overrides(ctx, data_seed, train), *shared],
                          configs, train_seeds, [data_seed])
    return members


# ----------------------------------------------------------------------------- sweeps

def run_or_load(ctx: Context, members: list[Member], out: Path, train: bool,
                stop=None) -> dict | None:
    """sweep.json of `out`: loaded when finished, else trained (resumed when it was started)
    if `train`; None when unfinished and not trained, or ended early by `stop` (see
    `sweep_run.run_sweep`). Refuses a folder of other members."""
    plan_file = out / "sweep_plan.json"
    if plan_file.exists():
        wanted = json.loads(json.dumps(sweep_run.plan(members)))
        if not sweep_run.same_plan(json.loads(plan_file.read_text()), wanted):
            raise ProtocolError(f"{out} holds a sweep of other members or settings than this "
                                "command (another --budget, --epochs, --splits...): use another "
                                "--runs-dir or remove that folder")
    if members[0].cfg.model.name in SOLO:
        return run_solo(ctx, members, out, train)
    if (out / "sweep.json").exists():
        return json.loads((out / "sweep.json").read_text())
    if not train:
        return None
    started = []  # the groups the sweep engine trains (not those it finds finished)

    def announce(index, group):
        if not started:
            print(f"protocol: training {out} ({len(members)} runs)", file=sys.stderr)
            ctx.trained += 1
        started.append(index)

    summary = sweep_run.run_sweep(members, out, progress=ctx.progress, command=ctx.command,
                                  resume=plan_file.exists(), max_group=ctx.max_group,
                                  stop=stop, on_group_start=announce)
    if summary is None and not started:
        print(f"protocol: {out} left unfinished: a finished run reached its cap", file=sys.stderr)
    return summary


def run_solo(ctx: Context, members: list[Member], out: Path, train: bool) -> dict | None:
    """A model without parameters (popularity), one solo run per member
    (`recgoat_jax.train.loop.train`): the sweep engine cannot map over members that have no
    state. Returns ``{"groups": [[name], ...]}`` once every member has its result.json."""
    from recgoat_jax.data.load import load_dataset
    from recgoat_jax.train.loop import train as train_one

    summary = {"groups": [[m.name] for m in members]}
    todo = [m for m in members if not (out / m.name / "result.json").exists()]
    if not todo or not train:
        return None if todo else summary
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "sweep_plan.json", sweep_run.plan(members))
    for m in todo:
        cfg = resolve_data(m.cfg)
        train_one(cfg, load_dataset(cfg.data), out / m.name, progress=False, overwrite=True)
    ctx.trained += 1
    return summary


def run_records(members: list[Member], out: Path, cap: int | None) -> list[dict]:
    """One dict per member with a result.json in `out` (finished groups only)."""
    records = []
    for m in members:
        file = out / m.name / "result.json"
        if not file.exists():
            continue
        r = json.loads(file.read_text())
        records.append({
            "name": m.name, "data_seed": m.cfg.data.seed, "train_seed": m.cfg.train.seed,
            "settings": list(m.settings), "best_epoch": r["best_epoch"],
            "epochs_run": r["epochs_run"], "cap": cap,
            "hit_cap": reached_cap(r, cap),
            "diverged": r.get("diverged"),
            "valid": r["valid"], "test": r["test"], "wall_seconds": r["wall_seconds"],
            "epoch_seconds_member": r["epoch_seconds_median"] / r.get("sweep_group_size", 1)})
    return records


def reached_cap(result: dict, cap: int | None) -> bool:
    """A run (result.json content) that trained `cap` epochs without stopping early; a
    diverged run stopped on its own, so it never counts."""
    return cap is not None and result["epochs_run"] >= cap and not result.get("diverged")


def finished_wall(out: Path) -> float:
    """Seconds the finished groups of the sweep in `out` trained, whether or not the sweep
    finished: each member's result.json holds its group's wall time, shared by the group."""
    total = 0.0
    for f in sorted(out.glob("*/result.json")):
        r = json.loads(f.read_text())
        total += r["wall_seconds"] / r.get("sweep_group_size", 1)
    return total


def tune(ctx: Context, model: Model, train: bool) -> dict:
    """Stage 1: the model's tuning sweep; ``{"chosen": settings or None, ...}``."""
    info = {"config": model.config, "overrides": list(model.overrides), "chosen": [],
            "tune_configurations": 0, "tune_hit_cap": 0, "tune_wall_seconds": 0.0}
    if not model.trainable:
        return info
    configs = search_space(model, ctx.budget, ctx.sample_seed)
    members = build_members(ctx, model, configs, [ctx.tune_seed], [ctx.train_seeds[0]],
                            ctx.epochs, train)
    out = ctx.runs_dir / "tune" / model.name
    summary = run_or_load(ctx, members, out, train)
    info["tune_configurations"] = len(configs)
    if summary is None:
        info["chosen"] = None
        return info
    if summary["winner"] is None:
        raise ProtocolError(f"{out}/sweep.json: no configuration has a valid metric to choose "
                            "on (every one diverged or was never evaluated)")
    winner = next(c for c in summary["configurations"] if c["config_id"] == summary["winner"])
    tune_runs = run_records(members, out, ctx.epochs)
    metric = summary["selection_metric"]
    winner_names = {m.name for m in members if m.config_id == winner["config_id"]}
    winner_runs = [r for r in tune_runs if r["name"] in winner_names]
    info.update(chosen=list(winner["settings"]), tune_winner=winner["config_id"],
                tune_winner_hit_cap=any(r["hit_cap"] for r in winner_runs),
                tune_valid=winner["valid"][metric]["mean"], tune_sweep=str(out),
                tune_hit_cap=sum(r["hit_cap"] for r in tune_runs),
                tune_diverged=sum(bool(r["diverged"]) for r in tune_runs),
                tune_wall_seconds=finished_wall(out))
    return info


def at_cap_stop(cap: int):
    """A sweep's `stop`: True once a finished run (not diverged) reached `cap` epochs."""
    def stop(results: list[dict]) -> bool:
        return any(reached_cap(r, cap) for r in results)
    return stop


def final(ctx: Context, model: Model, chosen: list[str], train: bool,
          winner_hit_cap: bool = False) -> dict:
    """Stage 2: the chosen configuration on the final splits, the cap doubled while runs hit
    it (with --raise-cap); ``{"runs", "cap", "final_sweep", "final_wall_seconds", ...}``.

    `winner_hit_cap`: the chosen configuration's tuning run reached the cap. With --raise-cap
    and no final sweep at the base cap started yet, the final then starts at twice the cap:
    the same configuration at the same cap would only hit it again."""
    seeds = ctx.train_seeds if model.trainable else ctx.train_seeds[:1]
    cap = ctx.epochs

    def folder(raises: int, cap: int) -> Path:
        return ctx.runs_dir / "final" / (model.name + (f"_cap{cap}" if raises else ""))

    start = 0
    if (model.trainable and winner_hit_cap and ctx.raise_cap
            and not (folder(0, cap) / "sweep_plan.json").exists()):
        start, cap = 1, cap * 2
    for raises in range(start, MAX_RAISES + 1):
        members = build_members(ctx, model, [tuple(chosen)], ctx.split_seeds, seeds, cap,
                                train)
        out = folder(raises, cap)
        # a run at the cap condemns the whole sweep to a rerun: skip its remaining groups
        stop = (at_cap_stop(cap) if model.trainable and ctx.raise_cap and raises < MAX_RAISES
                else None)
        summary = run_or_load(ctx, members, out, train, stop=stop)
        runs = run_records(members, out, cap if model.trainable else None)
        info = {"runs": runs, "cap": cap if model.trainable else None, "final_sweep": str(out),
                "final_finished": summary is not None,
                "final_wall_seconds": finished_wall(out),
                "resolved_config": config_lib.to_dict(resolve_data(members[0].cfg))}
        at_cap = any(r["hit_cap"] for r in runs)  # of the finished groups, when unfinished
        if not at_cap or raises == MAX_RAISES:
            return info
        cap *= 2
        # without --raise-cap, a raised sweep that an earlier --raise-cap started is still used
        if not ctx.raise_cap and not (folder(raises + 1, cap) / "sweep_plan.json").exists():
            return info
    return info


# ----------------------------------------------------------------------------- report

def build_report(ctx: Context, infos: dict[str, dict]) -> dict:
    """The results JSON: protocol settings, one entry per model of `MODELS`, provenance."""
    from recgoat_jax.train.run_dir import provenance

    baseline = infos.get(report_lib.BASELINE, {}).get("runs")
    models, missing = {}, []
    for model in MODELS:
        info = dict(infos.get(model.name) or {"config": model.config, "chosen": None,
                                               "overrides": list(model.overrides),
                                               "tune_configurations": 0, "tune_hit_cap": 0,
                                               "tune_wall_seconds": 0.0})
        info["chosen"] = info.get("chosen") or []
        runs = info.get("runs") or []
        if runs:
            info["final"] = report_lib.model_summary(
                runs, baseline if model.name != report_lib.BASELINE else None)
        if not info.get("final_finished"):
            missing.append(model.name)
        models[model.name] = info
    partial = "runs missing for " + ", ".join(
        m + ("" if m in ctx.models else " (not in --models)") for m in missing) if missing else ""
    return {
        "setting": ctx.setting, "partial": partial, "missing": missing, "command": ctx.command,
        "git_commit": provenance([])["git_commit"],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "runs_dir": _relative(ctx.runs_dir),
        "protocol": {"budget": ctx.budget, "sample_seed": ctx.sample_seed,
                     "tune_seed": ctx.tune_seed, "split_seeds": ctx.split_seeds,
                     "train_seeds": ctx.train_seeds, "epoch_cap": ctx.epochs,
                     "raise_cap": ctx.raise_cap, "selection_metric": "recall@20",
                     "base_space": list(BASE_SPACE), "recgoat_space": list(RECGOAT_SPACE),
                     "shared": list(SHARED) + (list(SMOKE) if ctx.smoke else []),
                     "smoke": ctx.smoke},
        "total_wall_seconds": total_wall(ctx.runs_dir),
        "models": models,
    }


def _relative(path: Path) -> str:
    """`path` from the repository root when inside it (what the committed page shows)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def total_wall(runs_dir: Path) -> float:
    """Seconds trained by every finished group under `runs_dir` (<stage>/<sweep>/), in
    finished and unfinished sweeps, replaced cap sweeps included."""
    return sum(finished_wall(out) for out in sorted(runs_dir.glob("*/*")) if out.is_dir())


def write_report(ctx: Context, infos: dict[str, dict]) -> dict:
    report = build_report(ctx, infos)
    ctx.results_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(ctx.results_dir / f"{ctx.setting}.json", report)
    atomic_write_text(ctx.results_dir / f"{ctx.setting}.md", report_lib.markdown(report))
    return report


# ----------------------------------------------------------------------------- main

def model_info(ctx: Context, model: Model, train: bool) -> dict:
    """Both stages of one model: its tuning and, once a configuration is chosen, its final."""
    info = tune(ctx, model, train)
    if info["chosen"] is not None:
        info.update(final(ctx, model, info["chosen"], train,
                          winner_hit_cap=info.get("tune_winner_hit_cap", False)))
    return info


def run_protocol(ctx: Context) -> dict:
    """Both stages for every model (training only those in --models), the report rewritten
    after each; returns the report. Every rewrite shows each model as far as the runs folder
    holds it, so a page written before an interruption is as complete as --report-only's."""
    infos = {model.name: model_info(ctx, model, train=False) for model in MODELS}
    if not ctx.report_only:
        for model in MODELS:
            if model.name in ctx.models:
                infos[model.name] = model_info(ctx, model, train=True)
                write_report(ctx, infos)
    return write_report(ctx, infos)


def main(argv: list[str] | None = None) -> int:
    try:
        ctx = parse_args(argv)
        report = run_protocol(ctx)
    except (ProtocolError, SweepError, ConfigError, DataError, CheckpointError,
            OSError) as e:  # CheckpointError: e.g. a resume with another --max-group
        raise SystemExit(f"protocol.py: error: {e}") from None
    print(f"protocol: {ctx.trained} sweep(s) trained by this invocation; "
          f"{'PARTIAL: ' + report['partial'] if report['partial'] else 'complete'}; "
          f"wrote {ctx.results_dir / ctx.setting}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
