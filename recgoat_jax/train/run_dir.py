"""A run's output folder: which files belong to a run, starting one safely, the best-valid
parameters, train.log, and the provenance result.json records.

Layout of ``<out>/``:
  config.toml     the resolved configuration (``--config`` it to repeat the run)
  metrics.jsonl   one line per epoch: loss terms, diagnostics, seconds, metrics when evaluated
  result.json     the selected epoch's valid / test metrics, timings, provenance (written last:
                  its presence means the run finished)
  train.log       what the run printed, with timestamps
  best/           params.npz (flattened "a/b/c" keys, as `recgoat-jax evaluate --params` and
                  `convert --to torch` read) and best.json (epoch, metric, value)
  checkpoints/    Orbax checkpoints (train.checkpoint_every > 0, or after Ctrl-C)
  tensorboard/    event files (train.tensorboard = true)
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import numpy as np

from recgoat_jax.io_utils import atomic_write_bytes, atomic_write_json
from recgoat_jax.tree_utils import flatten

RUN_FILES = ("config.toml", "metrics.jsonl", "result.json", "train.log", "best", "checkpoints",
             "tensorboard")


class RunExists(ValueError):
    """`--out` holds a finished run and neither --overwrite nor --resume was given."""


def refuse_finished(out: Path) -> None:
    """RunExists when `out` holds a finished run (its result.json)."""
    if (out / "result.json").exists():
        raise RunExists(f"--out {out} holds a finished run (result.json): pass --overwrite to "
                        "replace it, --resume to continue it, or choose another --out")


def prepare(out: Path, resume: bool, overwrite: bool) -> list[str]:
    """Make `out` ready for a run; returns the names of the earlier files it removed.

    A finished run (result.json) is refused unless `overwrite`; `overwrite` removes every file
    of the earlier run. Without it, leftovers of an unfinished earlier run (no checkpoints: a
    run with checkpoints must be resumed or overwritten, see `Checkpointer`) are removed so
    that none can be mistaken for this run's. On `resume` only result.json goes: it is written
    again when the resumed run ends.
    """
    if resume:
        return _remove(out, ("result.json",))
    if overwrite:
        return _remove(out, RUN_FILES)
    refuse_finished(out)
    return _remove(out, tuple(f for f in RUN_FILES if f != "checkpoints"))


def _remove(out: Path, names) -> list[str]:
    removed = []
    for name in names:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(name)
    return removed


def open_log(out: Path, resume: bool) -> logging.Logger:
    """A logger writing to ``<out>/train.log`` (appending on resume); `close_log` releases it."""
    logger = logging.getLogger(f"recgoat_jax.run.{out}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = logging.FileHandler(out / "train.log", mode="a" if resume else "w")
    handler.setFormatter(logging.Formatter("%(asctime)s  %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger.addHandler(handler)
    return logger


def close_log(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        handler.close()
        logger.removeHandler(handler)


def save_best(out: Path, params, epoch: int, metric: str, value: float) -> None:
    """Write the selected epoch's parameters (host numpy) to ``<out>/best/``, atomically."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in flatten(params).items()})
    atomic_write_bytes(out / "best" / "params.npz", buf.getvalue())
    atomic_write_json(out / "best" / "best.json", {"epoch": int(epoch), "metric": metric,
                                                   "value": float(value)})


def best_epoch_saved(out: Path) -> int | None:
    """The epoch ``<out>/best/`` holds, or None."""
    try:
        return int(json.loads((out / "best" / "best.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return None


def provenance(devices) -> dict:
    """Package version, git commit of the code (when it runs from a checkout) and devices."""
    try:
        version = metadata.version("recgoat-jax")
    except metadata.PackageNotFoundError:
        from recgoat_jax import __version__ as version
    return {"package_version": version, "git_commit": _git_commit(),
            "devices": [f"{d.platform}:{d.id} {d.device_kind}" for d in devices]}


def _git_commit() -> str | None:
    """HEAD of the checkout this package was imported from (+ "-dirty"), None elsewhere."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--",
                                "recgoat_jax"], capture_output=True, text=True, timeout=10,
                               check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


class RunFileError(ValueError):
    """A run file that cannot be continued from; the message names the file and line."""


def keep_metric_lines(path: Path, last_epoch: int) -> str | None:
    """Keep the metrics.jsonl lines of epochs <= `last_epoch` (a resumed run trains the later
    ones again). A truncated LAST line (the run was killed while writing it) is dropped and
    described in the returned note; a bad line elsewhere raises RunFileError naming it."""
    if not path.exists():
        return None
    lines = path.read_text().splitlines()
    kept, note = [], None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            epoch = int(json.loads(line)["epoch"])
        except (ValueError, KeyError, TypeError):
            if number == len(lines):
                note = f"{path}:{number}: dropped a truncated last line"
                continue
            raise RunFileError(f"{path}:{number}: not a metrics line (JSON with an 'epoch'); "
                               "the file was edited or corrupted") from None
        if epoch <= last_epoch:
            kept.append(line)
    from recgoat_jax.io_utils import atomic_write_text
    atomic_write_text(path, "".join(line + "\n" for line in kept))
    return note
