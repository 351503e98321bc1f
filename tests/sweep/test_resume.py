"""Kill -9 during a sweep, then `--resume`: the final sweep.json equals an uninterrupted one's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ARGS = ["sweep", "--config", "lightgcn", "--preset", "tiny", "--quiet",
        "--set", "train.epochs=12", "--set", "eval.every=2", "--set", "eval.patience=50",
        "--set", "train.n_devices=1", "--set", "train.batch_size=128",
        "--set", "train.checkpoint_every=1", "--grid", "train.lr=1e-3,5e-3", "--seeds", "0", "1"]


def _summary(out: Path) -> dict:
    summary = json.loads((out / "sweep.json").read_text())
    summary.pop("command")
    return summary


def test_sigkill_then_resume_gives_the_uninterrupted_sweep(run_cli, tmp_path):
    straight = tmp_path / "straight"
    assert run_cli(*ARGS, "--out", straight)[0] == 0

    out = tmp_path / "killed"
    repo = Path(__file__).resolve().parents[2]
    worker = subprocess.Popen([sys.executable, __file__, *ARGS, "--out", str(out)],
                              env={**os.environ, "PYTHONPATH": str(repo)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    metrics = out / "c00_seed0" / "metrics.jsonl"
    try:
        deadline = time.monotonic() + 240
        while not (metrics.exists() and metrics.read_text().count("\n") >= 5):
            if worker.poll() is not None:
                pytest.fail(f"worker ended early:\n{worker.stdout.read().decode()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the worker never reached epoch 5")
            time.sleep(0.05)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
    assert not (out / "sweep.json").exists()
    code, _, err = run_cli(*ARGS, "--out", out)  # without --resume: refused
    assert code == 2 and "--resume" in err
    code, _, err = run_cli(*ARGS, "--out", out, "--resume")
    assert code == 0, err
    assert _summary(out) == _summary(straight)
    for member in ("c00_seed0", "c01_seed1"):
        a = (out / member / "metrics.jsonl").read_text().splitlines()
        b = (straight / member / "metrics.jsonl").read_text().splitlines()
        strip = [lambda line: {k: v for k, v in json.loads(line).items() if k != "seconds"}] * 2
        assert [strip[0](x) for x in a] == [strip[1](x) for x in b]


if __name__ == "__main__":  # the worker: a sweep slowed to 0.3 s per epoch, to be killed
    from recgoat_jax.cli import main
    from recgoat_jax.sweep.engine import GroupTrainer

    train_epoch = GroupTrainer.train_epoch

    def slow(self, state, active):
        time.sleep(0.3)
        return train_epoch(self, state, active)

    GroupTrainer.train_epoch = slow
    sys.exit(main(sys.argv[1:]))


def test_a_plan_written_before_a_config_key_existed_still_matches():
    from recgoat_jax.sweep.run import plan, same_plan
    from recgoat_jax.sweep.spec import expand

    members = expand("lightgcn", ['data.preset="tiny"'], [("train.lr=1e-3",)], [0], [7])
    wanted = json.loads(json.dumps(plan(members)))
    stored = json.loads(json.dumps(wanted))
    del stored["members"][0]["config"]["train"]["sharding"]  # a key the package added later
    assert same_plan(stored, wanted)
    changed = json.loads(json.dumps(wanted))
    changed["members"][0]["config"]["train"]["sharding"] = "graph"  # not its default
    assert not same_plan(stored, changed)
    stored["members"][0]["config"]["train"]["lr"] = 5e-3  # a real difference
    assert not same_plan(stored, wanted)


def test_stop_ends_a_sweep_after_a_group_and_a_resume_completes_it(tmp_path):
    from recgoat_jax.sweep import run as sweep_run
    from recgoat_jax.sweep.spec import expand

    overrides = ['data.preset="tiny"', "train.epochs=4", "eval.every=2", "train.n_devices=1",
                 "train.batch_size=128"]
    members = expand("lightgcn", overrides, [("train.lr=1e-3",), ("train.lr=1e-2",)], [0],
                     None)
    out = tmp_path / "sw"
    seen = []

    def stop(results):
        seen.append(sorted(r["epochs_run"] for r in results))
        return True

    assert sweep_run.run_sweep(members, out, progress=False, max_group=1, stop=stop) is None
    assert seen == [[4]]  # asked once, after the first group, with its result
    assert (out / "c00_seed0" / "result.json").exists()
    assert not (out / "c01_seed0").exists() and not (out / "sweep.json").exists()
    first = (out / "c00_seed0" / "result.json").stat().st_mtime_ns
    # a resume that stops again ends at once; one without `stop` trains the rest only
    assert sweep_run.run_sweep(members, out, progress=False, max_group=1, resume=True,
                               stop=stop) is None
    assert not (out / "c01_seed0").exists()
    summary = sweep_run.run_sweep(members, out, progress=False, max_group=1, resume=True)
    assert summary["groups"] == [["c00_seed0"], ["c01_seed0"]]
    assert (out / "c00_seed0" / "result.json").stat().st_mtime_ns == first
    # a stop that never fires changes nothing
    again = sweep_run.run_sweep(members, tmp_path / "b", progress=False, max_group=1,
                                stop=lambda results: False)
    assert again["winner"] == summary["winner"]
