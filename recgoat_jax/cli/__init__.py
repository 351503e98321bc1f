"""`recgoat-jax` command line.

One module per command group, each with `add_parser(subparsers)`:
  train.py      train (and --resume)               sweep.py     many runs as one program
  evaluate.py   evaluate --run | --params
  recommend.py  recommend top-K items              data.py      data stats
  config.py     config show | keys | presets       plot.py      plot curves of runs
  convert.py    torch state_dict <-> .npz          features.py  encode items, profiles ...

Every failure the user can fix ends as one line `recgoat-jax: error: ...` with exit code 2,
never a traceback (`main`).
"""

from __future__ import annotations

import argparse
import sys

from recgoat_jax import __version__
from recgoat_jax.cli import (config as config_cmd, convert, data, evaluate, features, plot,
                             recommend, sweep, train)
from recgoat_jax.cli.common import CliError

COMMAND_GROUPS = (train, sweep, evaluate, recommend, data, config_cmd, plot, convert, features)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recgoat-jax", description="RecGOAT and its baselines in JAX: train, evaluate, "
                                        "recommend, plot, convert, encode features.")
    parser.add_argument("--version", action="version", version=f"recgoat-jax {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.add_parser(sub)
    return parser


def _expected_errors() -> tuple[type[BaseException], ...]:
    """The errors that mean "fix your input", printed on one line."""
    from recgoat_jax.config import ConfigError
    from recgoat_jax.data import DataError
    from recgoat_jax.train.checkpoint import CheckpointError
    from recgoat_jax.train.guard import TrainingDiverged
    from recgoat_jax.train.run_dir import RunExists, RunFileError

    return (CliError, ConfigError, DataError, CheckpointError, TrainingDiverged, RunExists,
            RunFileError, OSError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _expected_errors() as e:
        return _error(e)
    except KeyboardInterrupt:
        return _error("interrupted (nothing saved for this epoch)")


def _error(message) -> int:
    text = str(message).strip().replace("\n", " ")
    print(f"recgoat-jax: error: {text}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
