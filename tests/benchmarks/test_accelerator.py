"""benchmarks/accelerator.sh --smoke: every step of the accelerator runbook runs on CPU and
writes its page named after the device; a broken step or row fails the script."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow  # over a minute on CI; run it before a device session (README: slow tests)
def test_smoke_runbook_writes_every_page_for_this_device(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("XLA_FLAGS", None)  # the runbook's own device count, not the test session's 8
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "accelerator.sh"), "--smoke",
                           "--out", str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("epoch_time", "roofline", "sweep_throughput"):
        page = json.loads((tmp_path / f"{name}_cpu.json").read_text())
        assert page
    rows = [r for s in json.loads((tmp_path / "epoch_time_cpu.json").read_text())["settings"]
            for r in s["rows"]]
    assert {r["framework"] for r in rows} == {"jax"} and all(r["status"] == "ok" for r in rows)
    assert "device: cpu" in done.stdout


def test_unknown_option_is_one_line(tmp_path):
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "accelerator.sh"), "--fast"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == ("accelerator.sh: error: unknown option '--fast' (expected "
                                   "--smoke, --out DIR)")
