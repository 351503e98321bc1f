"""`recgoat-jax train` runs that are safe to repeat: short runs report metrics, finished runs
are not overwritten by accident, resume falls back past a broken checkpoint, Ctrl-C saves,
and every run records where its data came from."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from recgoat_jax import config as C
from tests.conftest import xla_flags

LGN = ["--config", "lightgcn", "--set", "model.dim=8", "--quiet"]


def test_a_run_shorter_than_eval_every_still_reports_metrics(run_cli, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = run_cli("train", *LGN, "--preset", "tiny", "--out", out,
                                "--set", "train.epochs=2", "--set", "eval.every=5")
    assert code == 0, err
    result = json.loads((out / "result.json").read_text())
    assert result["best_epoch"] == 2 and result["test"]["recall@20"] > 0
    assert result["valid"]["recall@20"] > 0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2]  # epochs count from 1
    assert "valid/recall@20" in lines[1] and "valid/recall@20" not in lines[0]
    assert f"wrote {out}" in err  # where it wrote
    assert "epoch 2" in (out / "train.log").read_text()


def test_result_records_data_source_version_commit_devices(run_cli, tiny_mmrec, tmp_path):
    folder = tiny_mmrec()
    out = tmp_path / "run"
    rel = os.path.relpath(folder)
    code, _, err = run_cli("train", *LGN, "--data-path", rel, "--out", out,
                           "--set", "train.epochs=1")
    assert code == 0, err
    result = json.loads((out / "result.json").read_text())
    source = result["data_source"]
    assert source["kind"] == "files" and source["format"] == "mmrec"  # detected
    assert source["path"] == str(folder.resolve())
    import hashlib
    assert source["sha256"] == {"tiny.inter": hashlib.sha256(
        (folder / "tiny.inter").read_bytes()).hexdigest()}
    assert result["package_version"] and result["devices"]
    assert "git_commit" in result
    cfg = C.load(out / "config.toml")
    assert cfg.data.path == str(folder.resolve()) and cfg.data.format == "mmrec"
    # the synthetic preset is recorded by name and seed
    code, _, _ = run_cli("train", *LGN, "--preset", "tiny", "--out", tmp_path / "syn",
                         "--set", "train.epochs=1")
    source = json.loads((tmp_path / "syn" / "result.json").read_text())["data_source"]
    assert source == {"kind": "synthetic", "preset": "tiny", "seed": 2025,
                      "feature_signal": -1.0, "text_signal": -1.0, "user_features": "history"}


def test_output_files_have_the_usual_permissions(run_cli, tmp_path):
    out = tmp_path / "run"
    old = os.umask(0o022)
    try:
        assert run_cli("train", *LGN, "--preset", "tiny", "--out", out,
                       "--set", "train.epochs=1")[0] == 0
    finally:
        os.umask(old)
    for name in ("config.toml", "metrics.jsonl", "result.json", "train.log",
                 "best/params.npz", "best/best.json"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name


def test_finished_run_is_refused_unless_overwrite(run_cli, tmp_path):
    out = tmp_path / "run"
    args = ["train", *LGN, "--preset", "tiny", "--out", out, "--set", "train.epochs=1"]
    assert run_cli(*args)[0] == 0
    before = (out / "result.json").read_text()
    code, _, err = run_cli(*args)
    assert code == 2 and "finished run" in err and "--overwrite" in err
    assert (out / "result.json").read_text() == before
    (out / "tensorboard").mkdir()  # a file the new run will not write
    code, _, err = run_cli(*args, "--overwrite", "--set", "train.epochs=2")
    assert code == 0, err
    assert json.loads((out / "result.json").read_text())["epochs_run"] == 2
    assert not (out / "tensorboard").exists()


def test_a_failed_run_leaves_no_file_of_an_earlier_run(run_cli, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("metrics.jsonl", "train.log", "config.toml"):  # an unfinished earlier run
        (out / name).write_text("old\n")
    (out / "best").mkdir()
    (out / "best" / "best.json").write_text("{}")
    # diverges at once: lr 1e30 makes the loss non-finite in the first epoch
    code, _, err = run_cli("train", *LGN, "--preset", "tiny", "--out", out,
                           "--set", "train.epochs=2", "--set", "train.lr=1e30")
    assert code == 2 and "NaN" in err
    assert not (out / "best").exists()
    assert (out / "metrics.jsonl").read_text() != "old\n"
    assert "old" not in (out / "train.log").read_text()


def test_resume_falls_back_to_the_newest_checkpoint_that_verifies(run_cli, tmp_path):
    out = tmp_path / "run"
    common = ["train", *LGN, "--preset", "tiny", "--out", out, "--set", "train.checkpoint_every=1",
              "--set", "train.max_to_keep=5"]
    assert run_cli(*common, "--set", "train.epochs=3")[0] == 0
    full = json.loads((out / "result.json").read_text())
    # break the newest checkpoint's arrays, and cut metrics.jsonl's last line mid-write
    newest = out / "checkpoints" / "3"
    victims = [p for p in (newest / "state").rglob("*") if p.is_file() and p.stat().st_size > 64]
    for p in victims:
        p.write_bytes(b"\0" * p.stat().st_size)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])
    code, _, err = run_cli(*common, "--set", "train.epochs=3", "--resume")
    assert code == 0, err
    log = (out / "train.log").read_text()
    assert "skipped checkpoint" in log and f"{newest}" in log
    assert "resumed from" in log and "/checkpoints/2" in log
    resumed = json.loads((out / "result.json").read_text())
    assert resumed["test"] == pytest.approx(full["test"], rel=1e-5)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2, 3]


def test_a_bad_middle_line_in_metrics_stops_resume(run_cli, tmp_path):
    out = tmp_path / "run"
    common = ["train", *LGN, "--preset", "tiny", "--out", out,
              "--set", "train.checkpoint_every=1", "--set", "train.epochs=2"]
    assert run_cli(*common)[0] == 0
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("garbage\n" + "\n".join(lines[1:]) + "\n")
    code, _, err = run_cli(*common, "--resume")
    assert code == 2 and "metrics.jsonl:1" in err and len(err.strip().splitlines()) == 1


def test_batch_is_clamped_to_a_small_training_set(run_cli, tmp_path):
    out = tmp_path / "run"
    code, _, err = run_cli("train", *LGN, "--preset", "tiny", "--out", out,
                           "--set", "train.epochs=1", "--set", "train.batch_size=4096")
    assert code == 0, err
    result = json.loads((out / "result.json").read_text())
    import jax
    n = jax.device_count()  # 460 training pairs, rounded up to a multiple of the devices
    rows = -(-460 // n) * n
    assert result["step_batch_size"] == rows
    assert f"each step uses {rows} rows" in (out / "train.log").read_text()


def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "recgoat_jax.cli", "train", "--config", "lightgcn",
           "--preset", "small", "--out", str(out), "--quiet", "--set", "train.epochs=300",
           "--set", "eval.every=1000"]
    env = {**os.environ, "XLA_FLAGS": xla_flags(1)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        metrics = out / "metrics.jsonl"
        if metrics.exists() and metrics.read_text().count("\n") >= 1:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("recgoat-jax: error: interrupted after epoch")
    assert "--resume" in last and "checkpoint saved in" in last
    epoch = int(last.split("interrupted after epoch ")[1].split(";")[0])
    assert (out / "checkpoints" / str(epoch)).is_dir()
    assert not (out / "result.json").exists()
    # the saved checkpoint resumes (two more epochs)
    resume = cmd[:cmd.index("train.epochs=300")] + [f"train.epochs={epoch + 2}"] + \
        cmd[cmd.index("train.epochs=300") + 1:] + ["--resume"]
    done = subprocess.run(resume, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "result.json").read_text())["epochs_run"] == epoch + 2


def test_tensorboard_event_files_when_asked(run_cli, tmp_path):
    pytest.importorskip("tensorboardX")
    out = tmp_path / "run"
    code, _, err = run_cli("train", *LGN, "--preset", "tiny", "--out", out,
                           "--set", "train.epochs=2", "--set", "train.tensorboard=true")
    assert code == 0, err
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 100
    code, _, err = run_cli("train", *LGN, "--preset", "tiny", "--out", tmp_path / "no",
                           "--set", "train.epochs=1")
    assert not (tmp_path / "no" / "tensorboard").exists()
