"""What every sub-command shares: the data options, the config they resolve to, `--out` checks,
and `CliError` (a one-line `recgoat-jax: error: ...`, exit 2)."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from recgoat_jax import config as config_lib


class CliError(Exception):
    """A mistake in the command line or its files; `main` prints it on one line, exit 2."""


def add_config_args(p: argparse.ArgumentParser, config_help: str = "TOML config or packaged "
                    "preset name (recgoat, lightgcn, ...; `recgoat-jax config presets`)") -> None:
    p.add_argument("--config", help=config_help)
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=10 (repeatable)")


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="synthetic preset: tiny, small, baby, sports, electronics, "
                                    "tiktok")
    p.add_argument("--data-format", choices=["mmrec", "lightgcn", "recbole"],
                   help="format of --data-path's files (default: detected from the files)")
    p.add_argument("--data-path", help="folder with the dataset's files")
    p.add_argument("--data-name", help="dataset name inside the folder (<name>.inter)")


def add_config_and_data_args(p: argparse.ArgumentParser) -> None:
    add_config_args(p)
    add_data_args(p)


def data_overrides(args) -> list[str]:
    """The `--set` overrides the data options stand for."""
    sets = []
    if getattr(args, "preset", None):
        sets += [f"data.preset={json.dumps(args.preset)}", 'data.format=""', 'data.path=""']
    if getattr(args, "data_path", None):
        sets.append(f"data.path={json.dumps(args.data_path)}")
        if not getattr(args, "data_format", None):
            sets.append('data.format=""')  # detected from the files by `resolve`
    if getattr(args, "data_format", None):
        sets.append(f'data.format="{args.data_format}"')
    if getattr(args, "data_name", None):
        sets.append(f"data.name={json.dumps(args.data_name)}")
    return sets


def resolve(args) -> config_lib.RunConfig:
    """The run's config: --config, then the data options, then --set, every value checked;
    a data folder is made absolute and its format detected when none is given."""
    from recgoat_jax.data.load import resolve_data

    cfg = config_lib.load(getattr(args, "config", None),
                          data_overrides(args) + list(getattr(args, "set", None) or []))
    return resolve_data(cfg)


def check_out_dir(out: str | os.PathLike) -> Path:
    """`--out` as an absolute path, refused (nothing written) when it names a file or cannot be
    written to (probed by creating and removing a temporary file in the nearest existing
    folder: permission bits alone say nothing for root)."""
    path = Path(out).absolute()
    if path.exists() and not path.is_dir():
        raise CliError(f"--out {out}: is a file, expected a folder")
    probe_dir = path
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise CliError(f"--out {out}: {probe_dir} is a file, expected a folder")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe_dir, prefix=".recgoat-write-probe-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise CliError(f"--out {out}: cannot write in {probe_dir} ({e.strerror or e})") from None
    return path


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))
