"""Orbax checkpoints: exact resume, a run killed mid-save, refused checkpoints, the NaN guard.

Run as a script (`python tests/test_checkpoint.py <out_dir>`), this file is the worker that the
kill test starts: it trains with a checkpoint every epoch and stalls inside the save of epoch 3
(after the files are written, before Orbax renames the temporary folder), so the test can
SIGKILL it in the middle of a save.
"""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recgoat_jax import config as C
from recgoat_jax.data.synthetic import generate
from recgoat_jax.models import build_model
from recgoat_jax.models.base import Recommender
from recgoat_jax.train.checkpoint import CheckpointError, state_checksums
from recgoat_jax.train.guard import TrainingDiverged
from recgoat_jax.train.loop import Trainer
from recgoat_jax.train.run_dir import RunExists

REPO = Path(__file__).resolve().parents[2]
TINY = ["data.preset=tiny", "train.batch_size=128", "model.dim=16", "eval.ks=[5, 10, 20]",
        "eval.user_batch=32", "model.name=lightgcn", "model.n_layers=1", "train.lr=0.01",
        "train.checkpoint_every=1", "train.max_to_keep=1"]
TIMING = ("seconds", "first_epoch_seconds", "epoch_seconds_median", "wall_seconds")
STALL_AT_EPOCH = 3


def _cfg(*extra):
    return C.load(None, TINY + list(extra))


def _lines(out: Path) -> list[dict]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def _untimed(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in TIMING}


def _snapshot(folder: Path) -> dict:
    """{relative path: bytes} of every file under folder (to prove nothing was written)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _same_state(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _close(a, b, rel: float = 1e-5) -> bool:
    """Equal up to `rel` relative in every float, exactly elsewhere (nested dicts / lists /
    arrays): for runs compiled in two processes, where XLA's reductions may round 1 ulp apart."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rel) for k in a)
    if isinstance(a, (list, tuple)) and not isinstance(a, str):
        return len(a) == len(b) and all(_close(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, float) or (hasattr(a, "dtype") and np.issubdtype(np.asarray(a).dtype,
                                                                      np.floating)):
        return np.allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=rel,
                           atol=rel * 1e-3)
    return np.array_equal(np.asarray(a), np.asarray(b)) if hasattr(a, "dtype") else a == b


@pytest.fixture(scope="module")
def straight(tiny, tmp_path_factory):
    """A 4-epoch run that was never interrupted: (trainer, result, out dir)."""
    out = tmp_path_factory.mktemp("straight")
    trainer = Trainer(_cfg("train.epochs=4"), tiny)
    return trainer, trainer.run(out, progress=False), out


@pytest.fixture(scope="module")
def two_epochs(tiny, tmp_path_factory):
    """The out dir of a 2-epoch run with a checkpoint every epoch (copy it before changing it)."""
    out = tmp_path_factory.mktemp("two") / "run"
    Trainer(_cfg("train.epochs=2"), tiny).run(out, progress=False)
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_resume_equals_a_run_never_interrupted(tiny, straight, two_epochs, tmp_path):
    trainer_a, result_a, out_a = straight
    out_b = _copy(two_epochs, tmp_path / "b")
    trainer_b = Trainer(_cfg("train.epochs=4"), tiny)
    result_b = trainer_b.run(out_b, progress=False, resume=True)
    assert _same_state(trainer_a.state, trainer_b.state)  # params, Adam moments, key, epoch
    assert _untimed(result_b) == _untimed(result_a)
    assert _lines(out_b) == _lines(out_a) and len(_lines(out_b)) == 4
    record = json.loads((out_b / "checkpoints/4/run/metadata").read_text())
    assert record["compile_epochs"] == [1, 3]  # kept out of result's epoch_seconds_median
    assert len(record["epoch_times"]) == 4
    # kept: the newest (max_to_keep=1) checkpoint, and the best one even though it is older
    assert result_a["best_epoch"] < 4, "this seed's best epoch must not be the last one"
    assert sorted(int(p.name) for p in (out_b / "checkpoints").iterdir()) == \
        [result_a["best_epoch"], 4]


def test_run_killed_during_a_save_resumes_from_the_last_complete_checkpoint(
        tiny, straight, tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # the same 8 devices: bit-identical sums
    worker = subprocess.Popen([sys.executable, __file__, str(out)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    marker = out / "stalled-in-save"
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            if worker.poll() is not None:
                pytest.fail(f"worker exited early:\n{worker.stdout.read().decode()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("worker never reached the save of epoch 3")
            time.sleep(0.05)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
        worker.stdout.close()
    partial = [p.name for p in (out / "checkpoints").rglob("*orbax-checkpoint-tmp*")]
    assert partial, "the kill should have left a half-finished save behind"

    trainer = Trainer(_cfg("train.epochs=4"), tiny)
    result = trainer.run(out, progress=False, resume=True)
    trainer_a, result_a, out_a = straight
    # epochs 1-2 ran in the worker process: equal to rounding (measured: 1 ulp, some runs)
    assert _close(jax.tree.leaves(trainer.state), jax.tree.leaves(trainer_a.state))
    assert _close(_untimed(result), _untimed(result_a))
    assert _close(_lines(out), _lines(out_a))  # the epoch-3 line of the killed run was replaced
    assert not list((out / "checkpoints").rglob("*orbax-checkpoint-tmp*"))


def test_resume_refuses_a_corrupt_checkpoint_and_writes_nothing(tiny, two_epochs, tmp_path):
    out = _copy(two_epochs, tmp_path / "corrupt")
    data = max((out / "checkpoints/2/state").rglob("d/*"), key=lambda p: p.stat().st_size)
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])  # a truncated array file
    before = _snapshot(out)
    with pytest.raises(CheckpointError, match=r"checkpoints/2 is unreadable or corrupt"):
        Trainer(_cfg("train.epochs=4"), tiny).run(out, progress=False, resume=True)
    assert _snapshot(out) == before


def test_checksums_see_any_flipped_bit_or_swapped_values():
    state = {"w": jnp.arange(12, dtype=jnp.float32).reshape(3, 4) / 7, "key": jax.random.PRNGKey(3),
             "n": jnp.array(5, jnp.int32), "b": jnp.array([True, False]),
             "h": jnp.ones((3,), jnp.bfloat16)}
    reference = state_checksums(state)
    rng = np.random.default_rng(0)
    for name, x in state.items():
        raw = np.atleast_1d(np.asarray(x)).copy()
        bits = raw.view(np.uint8).reshape(-1)
        for _ in range(4):
            flipped = bits.copy()
            position = rng.integers(bits.size)
            flipped[position] ^= 1 << int(rng.integers(1 if raw.dtype == bool else 8))
            value = flipped.view(raw.dtype).reshape(np.shape(x))
            changed = {**state, name: jnp.asarray(value)}
            assert state_checksums(changed) != reference, (name, position)
    swapped = np.asarray(state["w"]).copy()
    swapped[0, [0, 1]] = swapped[0, [1, 0]]
    assert state_checksums({**state, "w": jnp.asarray(swapped)}) != reference


def test_resume_refuses_arrays_that_do_not_match_their_checksums(tiny, two_epochs, tmp_path):
    out = _copy(two_epochs, tmp_path / "mismatch")
    record = out / "checkpoints/2/run/metadata"
    raw = json.loads(record.read_text())
    raw["checksums"][0] = (raw["checksums"][0] + 1) % 2**32  # as if the array had changed
    record.write_text(json.dumps(raw))
    before = _snapshot(out)
    with pytest.raises(CheckpointError, match="do not match the checksums"):
        Trainer(_cfg("train.epochs=4"), tiny).run(out, progress=False, resume=True)
    assert _snapshot(out) == before


def test_resume_refuses_another_config_or_model_and_a_fresh_run_refuses_old_checkpoints(tiny, two_epochs, tmp_path):
    out = _copy(two_epochs, tmp_path / "other")
    before = _snapshot(out)
    with pytest.raises(CheckpointError, match=r"another config.*model.dim: 16 -> 8"):
        Trainer(_cfg("train.epochs=4", "model.dim=8"), tiny).run(out, progress=False,
                                                                 resume=True)
    bigger = dataclasses.replace(tiny, n_users=tiny.n_users + 3,  # same config, other shapes
                                 user_features={})
    with pytest.raises(CheckpointError, match=r"another model or dataset.*embedding_user has "
                                              r"shape \(60, 16\)"):
        Trainer(_cfg("train.epochs=4"), bigger).run(out, progress=False, resume=True)
    with pytest.raises(RunExists, match="holds a finished run"):
        Trainer(_cfg("train.epochs=4"), tiny).run(out, progress=False)  # a fresh run
    assert _snapshot(out) == before
    (out / "result.json").unlink()  # an unfinished run: its checkpoints still refuse a fresh one
    before = _snapshot(out)
    with pytest.raises(CheckpointError, match="holds checkpoints of an earlier run: continue "
                                              "it with --resume"):
        Trainer(_cfg("train.epochs=4"), tiny).run(out, progress=False)
    assert _snapshot(out) == before
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        Trainer(_cfg("train.epochs=4"), tiny).run(tmp_path / "empty", progress=False,
                                                  resume=True)


def test_nan_guard_names_the_last_good_checkpoint(tiny, tmp_path):
    """A model whose loss turns NaN in epoch 3: a `clock` parameter that Adam moves by ~lr per
    step (4 steps per epoch) crosses -0.09 during epoch 3."""
    cfg = _cfg("train.epochs=5", "train.checkpoint_every=2")
    base = build_model(cfg, tiny)

    def init(key):
        return {**base.init(key), "clock": jnp.zeros(())}

    def loss(params, inputs, batch, key):
        ids = {k: v for k, v in params.items() if k != "clock"}
        value, terms = base.loss(ids, inputs, batch, key)
        clock = params["clock"]
        return value + clock + jnp.where(clock < -0.09, jnp.nan, 0.0), terms

    model = Recommender(name="clocked", init=init, loss=loss,
                        embed=lambda p, x: base.embed({k: v for k, v in p.items()
                                                       if k != "clock"}, x),
                        inputs=base.inputs)
    with pytest.raises(TrainingDiverged, match=r"epoch 3: .*NaN.*The last good checkpoint is "
                                               r".*checkpoints/2"):
        Trainer(cfg, tiny, model=model).run(tmp_path, progress=False)
    assert (tmp_path / "checkpoints/2").is_dir()  # awaited before the error left run()


def _stalling_worker(out: str) -> None:
    """Train 6 epochs, checkpoint every epoch; hang inside the save of epoch STALL_AT_EPOCH."""
    from orbax.checkpoint._src.path import atomicity

    finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def stalling_finalize(self):
        if self.get().name == f"{STALL_AT_EPOCH}.orbax-checkpoint-tmp":  # files written, not renamed
            (Path(out) / "stalled-in-save").touch()
            time.sleep(600)
        return await finalize(self)

    atomicity.AtomicRenameTemporaryPath.finalize = stalling_finalize
    Trainer(_cfg("train.epochs=6"), generate("tiny")).run(out, progress=False)


if __name__ == "__main__":
    _stalling_worker(sys.argv[1])
