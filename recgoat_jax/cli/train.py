"""`recgoat-jax train`: one run, written to --out (see `recgoat_jax.train.run_dir`)."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from recgoat_jax.cli.common import CliError, add_config_and_data_args, check_out_dir, resolve


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model; writes config.toml, metrics.jsonl, "
                                     "result.json, train.log, best/ to --out")
    add_config_and_data_args(p)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its newest checkpoint that verifies "
                        "(the config may change only train.epochs, n_devices, "
                        "checkpoint_every, max_to_keep)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a finished run in --out (its files are removed first)")
    p.set_defaults(func=run)


def run(args) -> int:
    from recgoat_jax.data.load import load_dataset
    from recgoat_jax.train.loop import RunInterrupted, train
    from recgoat_jax.train.run_dir import refuse_finished

    if args.resume and args.overwrite:
        raise CliError("--resume continues the run in --out and --overwrite replaces it: "
                       "choose one")
    cfg = resolve(args)  # every value checked before any data is read
    out = check_out_dir(args.out)
    if not (args.overwrite or args.resume):
        refuse_finished(out)  # before any data is read
    dataset = load_dataset(cfg.data)
    try:
        result = train(cfg, dataset, out, progress=not args.quiet, resume=args.resume,
                       overwrite=args.overwrite)
    except RunInterrupted as e:
        if not e.checkpoint:
            raise CliError(str(e)) from None
        raise CliError(f"{e}; continue with: {_resume_command()}") from None
    keys = ["recall@20", "ndcg@20"]
    print(json.dumps({"model": result["model"], "dataset": result["dataset"],
                      "best_epoch": result["best_epoch"],
                      **{f"test/{k}": result["test"].get(k) for k in keys},
                      "epoch_seconds_median": round(result["epoch_seconds_median"], 3),
                      "out": str(out)}))
    print(f"wrote {out}: config.toml, metrics.jsonl, result.json, train.log, best/",
          file=sys.stderr)
    return 0


def _resume_command() -> str:
    """This command line with --resume (and without --overwrite)."""
    argv = [a for a in sys.argv[1:] if a not in ("--overwrite", "--resume")]
    return shlex.join([Path(sys.argv[0]).name or "recgoat-jax", *argv, "--resume"])
