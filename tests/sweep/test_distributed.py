"""A sweep on 2 processes x 2 devices (localhost, jax.distributed): the 4 members are sharded
over the 4 devices of both hosts, process 0 writes the files, and every member equals the same
sweep run in one process.

Run as a script (`python tests/sweep/test_distributed.py <port> <process_id> <out>`), this file
is one of the two worker processes.
"""

from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import run_two_processes

SWEEP = ["sweep", "--config", "lightgcn", "--preset", "tiny", "--quiet",
         "--set", "train.epochs=3", "--set", "train.batch_size=128", "--set", "model.dim=16",
         "--grid", "train.lr=1e-3,1e-2", "--seeds", "0", "1"]
TIMEOUT_S = 240


def test_two_processes_run_the_same_sweep(run_cli, tmp_path):
    out = tmp_path / "two"
    run_two_processes(__file__, [str(out)], tmp_path, devices=2, timeout_s=TIMEOUT_S)
    one = tmp_path / "one"
    assert run_cli(*SWEEP, "--set", "train.n_devices=1", "--out", one)[0] == 0
    for member in ("c00_seed0", "c00_seed1", "c01_seed0", "c01_seed1"):
        a = [json.loads(x) for x in (one / member / "metrics.jsonl").read_text().splitlines()]
        b = [json.loads(x) for x in (out / member / "metrics.jsonl").read_text().splitlines()]
        assert [x["epoch"] for x in b] == [1, 2, 3]
        for x, y in zip(a, b, strict=True):
            assert y["loss"] == pytest.approx(x["loss"], rel=1e-5)
        assert b[-1]["test/recall@20"] == pytest.approx(a[-1]["test/recall@20"], abs=1e-5)
    assert json.loads((out / "sweep.json").read_text())["winner"] == \
        json.loads((one / "sweep.json").read_text())["winner"]


if __name__ == "__main__":
    from recgoat_jax.cli import main

    port, process_id, out = sys.argv[1:4]
    sys.exit(main([*SWEEP, "--out", out, "--set", "distributed.enabled=true",
                   "--set", f'distributed.coordinator_address="localhost:{port}"',
                   "--set", "distributed.num_processes=2",
                   "--set", f"distributed.process_id={process_id}"]))
