"""Orbax checkpoints of a whole run, and exact resume.

Layout: ``<out>/checkpoints/<epoch>/`` (absolute paths, as Orbax needs). A checkpoint is saved
every ``train.checkpoint_every`` epochs, at the last epoch, and at every epoch the protocol
selects (a better valid metric; the best test under the "reference" protocol). Kept: the newest
``train.max_to_keep`` checkpoints plus the selected one (result.json's ``best_epoch``). One
Orbax manager writes them all, so an epoch that is both periodic and best is written once.

Each checkpoint holds two items: ``state`` (the `TrainState` pytree: params, optimizer state,
RNG key, epoch; Orbax StandardSave) and ``run`` (JSON: the resolved config, the early-stopping
state, the epoch times, the last epoch's stats, whether the run stopped early, one checksum per
array). Saves are asynchronous (the arrays are copied off the device before `save` returns);
`close` waits for them. Orbax writes each checkpoint to a temporary folder and renames it when
complete, so a process killed mid-save leaves no half-written ``<epoch>`` folder: resume takes
the newest complete one (the temporary folders are removed on start).

Resume refuses, without writing anything, a checkpoint that cannot be read, whose arrays do not
match the checksums recorded when it was saved (a flipped bit included), whose config differs
from this run's in anything but the fields of `RESUMABLE_FIELDS`, or whose arrays do not have
this run's tree structure, shapes and dtypes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from recgoat_jax import config as config_lib
from recgoat_jax.config import ConfigError, RunConfig
from recgoat_jax.eval import protocol as protocol_lib
from recgoat_jax.train.state import TrainState

FORMAT = 3  # bump when the content of "run" changes incompatibly
# Fields a resumed run may change: how long it runs, where, how often it saves.
RESUMABLE_FIELDS = ("train.epochs", "train.n_devices", "train.sharding",
                    "train.checkpoint_every", "train.max_to_keep", "distributed.enabled",
                    "distributed.coordinator_address", "distributed.num_processes",
                    "distributed.process_id")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed: unreadable, or from another config or model."""


class CorruptCheckpoint(CheckpointError):
    """One checkpoint that cannot be read or fails its checksums (an older one may still do)."""


@dataclasses.dataclass(frozen=True)
class Progress:
    """The host-side part of a run that a checkpoint holds besides the arrays.

    selection: the early-stopping / model-selection state.
    epoch_times: seconds of every epoch trained so far.
    compile_epochs: the epochs whose time includes compiling (the first of every process).
    last_stats: the last epoch's loss terms ({} before the first epoch).
    stopped: True once early stopping ended the run.
    """

    selection: protocol_lib.EarlyStopping
    epoch_times: tuple[float, ...] = ()
    compile_epochs: tuple[int, ...] = ()
    last_stats: dict = dataclasses.field(default_factory=dict)
    stopped: bool = False


def state_checksums(state: Any) -> list[int]:
    """One uint32 per array of `state` (flattened order): the sum of its raw bits, each word
    weighted by an odd multiple of its position, modulo 2^32. Any single flipped bit changes
    it (an odd weight times a power of two below 2^32 is never 0 modulo 2^32)."""
    return [int(c) for c in _device_checksums(state)]


@jax.jit
def _device_checksums(state: Any) -> list[jax.Array]:
    def checksum(x):
        x = jnp.ravel(x)
        if x.dtype == jnp.bool_:
            x = x.astype(jnp.uint8)
        words = jax.lax.bitcast_convert_type(x, {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32,
                                                 8: jnp.uint32}[x.dtype.itemsize])
        words = jnp.ravel(words).astype(jnp.uint32)
        weights = 2 * jnp.arange(words.shape[0], dtype=jnp.uint32) + 1
        return jnp.sum(words * weights, dtype=jnp.uint32)

    return [checksum(x) for x in jax.tree.leaves(state)]


def progress_to_dict(progress: Progress, cfg: RunConfig, checksums: list[int] = ()) -> dict:
    return {"format": FORMAT, "config": config_lib.to_dict(cfg), "checksums": list(checksums),
            "selection": protocol_lib.state_to_dict(progress.selection),
            "epoch_times": [float(t) for t in progress.epoch_times],
            "compile_epochs": [int(e) for e in progress.compile_epochs],
            "last_stats": {k: float(v) for k, v in progress.last_stats.items()},
            "stopped": bool(progress.stopped)}


def progress_from_dict(raw: dict) -> tuple[Progress, RunConfig, list[int]]:
    """Inverse of `progress_to_dict`: (progress, the config the checkpoint was written with,
    the state's checksums)."""
    if raw.get("format") != FORMAT:
        raise ValueError(f"format {raw.get('format')!r}, this version reads format {FORMAT}")
    progress = Progress(selection=protocol_lib.state_from_dict(raw["selection"]),
                        epoch_times=tuple(float(t) for t in raw["epoch_times"]),
                        compile_epochs=tuple(int(e) for e in raw["compile_epochs"]),
                        last_stats={k: float(v) for k, v in raw["last_stats"].items()},
                        stopped=bool(raw["stopped"]))
    return progress, config_lib.from_dict(raw["config"]), [int(c) for c in raw["checksums"]]


def config_differences(saved: RunConfig, current: RunConfig) -> list[str]:
    """'key: saved -> current' for every field that differs, except `RESUMABLE_FIELDS`."""
    a = config_lib.to_flat_dict(saved)
    b = config_lib.to_flat_dict(current)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if k not in RESUMABLE_FIELDS and a.get(k) != b.get(k)]


def abstract_state(state: TrainState) -> TrainState:
    """ShapeDtypeStructs (with shardings) of `state`: the restore target."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                        state)


class _KeepLatestAndBest:
    """Orbax preservation policy: the newest `n` checkpoints and the one of `best_epoch`."""

    def __init__(self, n: int):
        self.n, self.best_epoch = n, -1

    def should_preserve(self, checkpoints, *, context) -> list[bool]:
        newest = {c.step for c in list(checkpoints)[-self.n:]}
        return [c.step in newest or c.step == self.best_epoch for c in checkpoints]


class Checkpointer:
    """Saves and restores one run's checkpoints under `directory` (see the module docstring).

    Args:
      directory: the checkpoints folder (made absolute).
      cfg: this run's resolved config (saved with every checkpoint, compared on restore).
      max_to_keep: newest checkpoints kept (the best one is kept besides).
    """

    def __init__(self, directory: str | Path, cfg: RunConfig, max_to_keep: int = 3):
        if max_to_keep < 1:
            raise ConfigError(f"train.max_to_keep must be >= 1, got {max_to_keep}")
        self.directory = Path(directory).absolute()
        self.cfg = cfg
        self._keep = _KeepLatestAndBest(max_to_keep)
        self.skipped: list[str] = []  # what the last restore_latest passed over, and why
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(create=True, cleanup_tmp_directories=True,
                                                 preservation_policy=self._keep),
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "run": ocp.JsonCheckpointHandler()})

    def path(self, epoch: int) -> str:
        return str(self.directory / str(epoch))

    def set_best(self, epoch: int) -> None:
        """The selected epoch, whose checkpoint is kept whatever `max_to_keep` says."""
        self._keep.best_epoch = int(epoch)

    def save(self, epoch: int, state: TrainState, progress: Progress) -> str:
        """Start saving `state` + `progress` as the checkpoint of `epoch`; returns its path.
        Asynchronous: `close()` (or `wait()`) before reading it back."""
        self._manager.save(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            run=ocp.args.JsonSave(progress_to_dict(progress, self.cfg, state_checksums(state)))))
        return self.path(epoch)

    def epochs(self) -> list[int]:
        """Epochs of the complete checkpoints, ascending."""
        return sorted(self._manager.all_steps())

    def restore_latest(self, template: TrainState) -> tuple[TrainState, Progress, str]:
        """Restore the newest checkpoint that verifies onto `template`'s shapes and shardings.

        Returns (state, progress, path). A checkpoint that cannot be read or fails its
        checksums is skipped for the next older one; `self.skipped` then lists each skipped
        path with the reason. Raises CheckpointError (naming the path and what is wrong) when
        none is left, or when a checkpoint belongs to another config or model (all of a run's
        checkpoints do then); nothing is written in any case.
        """
        epochs = self.epochs()
        if not epochs:
            raise CheckpointError(f"--resume: no checkpoint in {self.directory} (a run saves "
                                  "them when train.checkpoint_every > 0, and on Ctrl-C)")
        self.skipped = []
        for epoch in reversed(epochs):
            try:
                return self._restore(epoch, template)
            except CorruptCheckpoint as e:
                self.skipped.append(str(e))
        raise CheckpointError(f"--resume: no checkpoint in {self.directory} verifies: "
                              + " | ".join(self.skipped))

    def _restore(self, epoch: int, template: TrainState) -> tuple[TrainState, Progress, str]:
        path, manager = self.path(epoch), self._manager
        try:
            raw = manager.restore(epoch, args=ocp.args.Composite(run=ocp.args.JsonRestore()))
            progress, saved_cfg, checksums = progress_from_dict(raw["run"])
        except Exception as e:  # noqa: BLE001 - any failure to read is reported the same way
            raise CorruptCheckpoint(f"checkpoint {path} is unreadable or corrupt (its run "
                                    f"record could not be read: {_short(e)})") from e
        diff = config_differences(saved_cfg, self.cfg)
        if diff:
            raise CheckpointError(f"checkpoint {path} was written with another config; "
                                  f"differences (checkpoint -> this run): {'; '.join(diff)}")
        target = abstract_state(template)
        try:
            saved_metadata = manager.item_metadata(epoch)["state"]
        except Exception as e:  # noqa: BLE001
            raise CorruptCheckpoint(f"checkpoint {path} is unreadable or corrupt (no array "
                                    f"metadata: {_short(e)})") from e
        _check_structure(saved_metadata, target, path)
        try:
            restored = manager.restore(epoch, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target)))
        except Exception as e:  # noqa: BLE001
            raise CorruptCheckpoint(f"checkpoint {path} is unreadable or corrupt: "
                                    f"{_short(e)}") from e
        state = restored["state"]
        if state_checksums(state) != checksums:
            raise CorruptCheckpoint(f"checkpoint {path} is corrupt: its arrays do not match "
                                    "the checksums recorded when it was saved")
        if int(state.epoch) != epoch:
            raise CorruptCheckpoint(f"checkpoint {path} holds epoch {int(state.epoch)}, not "
                                    f"{epoch}: the folder was renamed or is corrupt")
        self.set_best(progress.selection.best_epoch)
        return state, progress, path

    def wait(self) -> None:
        """Block until every started save is complete on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Wait for pending saves, then release the manager."""
        self._manager.wait_until_finished()
        self._manager.close()


def _check_structure(saved_metadata: Any, target: TrainState, path: str) -> None:
    """CheckpointError unless the saved arrays have target's tree paths, shapes and dtypes."""
    tree = getattr(saved_metadata, "tree", saved_metadata)
    if tree is None:
        return  # no metadata recorded: Orbax's own restore checks the structure
    saved = {"/".join(k): v for k, v in ocp.tree.to_flat_dict(tree).items()
             if _is_array_metadata(v)}
    wanted = {"/".join(k): v for k, v in
              ocp.tree.to_flat_dict(ocp.tree.serialize_tree(target)).items()}
    problems = [f"{k} missing in the checkpoint" for k in wanted if k not in saved]
    problems += [f"{k} not in this model" for k in saved if k not in wanted]
    problems += [f"{k} has shape {tuple(saved[k].shape)} {saved[k].dtype}, this model "
                 f"{tuple(wanted[k].shape)} {wanted[k].dtype}" for k in wanted
                 if k in saved and (tuple(saved[k].shape) != tuple(wanted[k].shape)
                                    or saved[k].dtype != wanted[k].dtype)]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more"
                                           if len(problems) > 5 else "")
        raise CheckpointError(f"checkpoint {path} was written for another model or dataset: "
                              f"{shown}")


def _short(error: Exception, limit: int = 400) -> str:
    """'Type: message', cut (tensorstore errors carry kilobytes of spec)."""
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= limit else text[:limit] + " ..."


def _is_array_metadata(x) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")
