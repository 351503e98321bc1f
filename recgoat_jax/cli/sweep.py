"""`recgoat-jax sweep`: seeds, data splits and hyperparameters trained together, one compiled
program per group of same-shape members (`recgoat_jax.sweep`)."""

from __future__ import annotations

import shlex
import sys

from recgoat_jax.cli.common import CliError, add_config_and_data_args, check_out_dir, data_overrides


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="train a grid / random sample of configurations x seeds "
                                     "as one program per group; writes sweep.json, sweep.md "
                                     "and one run folder per member")
    add_config_and_data_args(p)
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="values of a config key (repeatable: the grid is their product)")
    p.add_argument("--random", action="append", default=[], metavar="KEY=LOW:HIGH[:log]",
                   help="a float key drawn uniformly (or log-uniformly) --samples times")
    p.add_argument("--samples", type=int, default=0, help="random draws per grid point")
    p.add_argument("--sample-seed", type=int, default=0, help="seed of the random draws")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="train seeds (default 0)")
    p.add_argument("--data-seeds", type=int, nargs="+",
                   help="data.seed values: synthetic generation / RecBole split per member")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace a sweep in --out")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted sweep in --out (the same command; groups "
                        "continue from their newest checkpoint: train.checkpoint_every)")
    p.add_argument("--max-group", type=int, default=0, metavar="N",
                   help="train at most N members at once: a larger group is cut into chunks "
                        "trained one after the other (less memory; an interrupted sweep keeps "
                        "every finished chunk). 0 (default): no limit")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from recgoat_jax.sweep.spec import (SweepError, configurations, expand, parse_grid,
                                        parse_random)
    from recgoat_jax.sweep.run import run_sweep

    out = check_out_dir(args.out)
    if args.resume and args.overwrite:
        raise CliError("--resume continues the sweep in --out and --overwrite replaces it: "
                       "choose one")
    if args.max_group < 0:
        raise CliError(f"--max-group {args.max_group}: expected >= 0 (0: no limit)")
    if (out / "sweep.json").exists() and not (args.overwrite or args.resume):
        raise CliError(f"--out {args.out} holds a finished sweep (sweep.json): pass --overwrite "
                       "to replace it, or choose another --out")
    try:
        configs = configurations(parse_grid(args.grid), parse_random(args.random),
                                 args.samples, args.sample_seed)
        members = expand(args.config, data_overrides(args) + list(args.set or []), configs,
                         args.seeds, args.data_seeds)
        summary = run_sweep(members, out, progress=not args.quiet,
                            command=shlex.join(["recgoat-jax", *sys.argv[1:]]),
                            resume=args.resume, overwrite=args.overwrite,
                            max_group=args.max_group)
    except SweepError as e:
        raise CliError(str(e)) from None
    winner = summary["winner"]
    print(f"{len(members)} members in {len(summary['groups'])} group(s); best on valid: "
          f"c{winner:02d} {summary['configurations'][winner]['settings']}" if winner is not None
          else f"{len(members)} members; no valid metric to choose on")
    print(f"wrote {out}/sweep.json, sweep.md and one folder per member", file=sys.stderr)
    return 0
