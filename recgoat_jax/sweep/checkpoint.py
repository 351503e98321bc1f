"""Checkpoints of one sweep group: the stacked state and every member's host-side record.

Layout: ``<sweep out>/checkpoints/<group name>/<epoch>/`` with two Orbax items, ``state`` (the
stacked `TrainState`) and ``run`` (JSON: the members' configs, each member's early-stopping
state, epoch times, last loss terms and whether it stopped, and one checksum per array). Orbax
writes to a temporary folder and renames it when complete, so a SIGKILL while saving leaves the
previous checkpoint as the newest; a checkpoint whose arrays fail their checksums is skipped
for the next older one.
"""

from __future__ import annotations

import json
from pathlib import Path

import orbax.checkpoint as ocp

from recgoat_jax import config as config_lib
from recgoat_jax.train.checkpoint import (CheckpointError, abstract_state, state_checksums)

FORMAT = 1


class GroupCheckpointer:
    """Saves / restores one group's checkpoints under `directory`."""

    def __init__(self, directory: str | Path, max_to_keep: int = 2):
        self.directory = Path(directory).absolute()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(create=True, cleanup_tmp_directories=True,
                                                 max_to_keep=max_to_keep),
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "run": ocp.JsonCheckpointHandler()})

    def save(self, epoch: int, state, record: dict) -> None:
        """Start saving (asynchronous; `close` waits)."""
        record = {**record, "format": FORMAT, "checksums": state_checksums(state)}
        self._manager.save(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), run=ocp.args.JsonSave(record)))

    def restore_latest(self, template, cfgs) -> tuple[object, dict, list[str]]:
        """(state, record, skipped) of the newest checkpoint that verifies; (None, {}, skipped)
        when none does (or there is none). CheckpointError when it was written for other
        members (configs; settings added to the package since count as equal at their
        default, `config.same_stored_config`)."""
        skipped = []
        wanted = json.loads(json.dumps([config_lib.to_dict(c) for c in cfgs]))  # as stored
        for epoch in sorted(self._manager.all_steps(), reverse=True):
            path = self.directory / str(epoch)
            try:
                record = self._manager.restore(epoch, args=ocp.args.Composite(
                    run=ocp.args.JsonRestore()))["run"]
            except Exception as e:  # noqa: BLE001 - unreadable: try the next older one
                skipped.append(f"{path}: unreadable ({type(e).__name__})")
                continue
            saved = record.get("configs") or []
            if record.get("format") != FORMAT or len(saved) != len(wanted) or not all(
                    config_lib.same_stored_config(a, b) for a, b in zip(saved, wanted)):
                raise CheckpointError(f"{path} was written for other sweep members (configs); "
                                      "use the same command, or --overwrite")
            try:
                state = self._manager.restore(epoch, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state(template))))["state"]
            except Exception as e:  # noqa: BLE001
                skipped.append(f"{path}: unreadable arrays ({type(e).__name__})")
                continue
            if state_checksums(state) != record["checksums"]:
                skipped.append(f"{path}: arrays do not match their checksums")
                continue
            return state, record, skipped
        return None, {}, skipped

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
