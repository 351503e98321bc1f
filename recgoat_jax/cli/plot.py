"""`recgoat-jax plot RUN_DIR [RUN_DIR ...] --out FILE.png`: curves of one or several runs."""

from __future__ import annotations

from pathlib import Path

from recgoat_jax.cli.common import CliError


def add_parser(sub) -> None:
    p = sub.add_parser("plot", help="loss terms, valid/test Recall@20 and NDCG@20, epoch "
                                    "seconds, transport and fusion diagnostics of runs (PNG)")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="train runs' --out folders")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--labels", help="legend labels, comma-separated, one per run")
    p.set_defaults(func=run)


def run(args) -> int:
    labels = [x.strip() for x in args.labels.split(",")] if args.labels else None
    if labels is not None and len(labels) != len(args.runs):
        raise CliError(f"--labels has {len(labels)} labels for {len(args.runs)} runs")
    if Path(args.out).is_dir():
        raise CliError(f"--out {args.out}: is a folder, expected a .png file name")
    try:
        from recgoat_jax.viz.plot import plot_runs
        path = plot_runs([Path(r) for r in args.runs], Path(args.out), labels=labels)
    except (ImportError, ValueError) as e:
        raise CliError(str(e)) from None
    print(f"wrote {path}")
    return 0
