"""`recgoat-jax sweep`: the grid x seeds as member folders, sweep.json / sweep.md computed from
the members' results and chosen on valid; bad input refused before anything is written."""

from __future__ import annotations

import json
import statistics

import pytest

QUICK = ["--config", "lightgcn", "--preset", "tiny", "--quiet", "--set", "train.epochs=6",
         "--set", "eval.every=2", "--set", "train.n_devices=1", "--set", "train.batch_size=128"]


def test_a_grid_times_seeds_sweep(run_cli, tmp_path):
    out = tmp_path / "sw"
    code, stdout, err = run_cli("sweep", *QUICK, "--grid", "train.lr=1e-3,1e-2",
                                "--seeds", "0", "1", "--out", out)
    assert code == 0, err
    summary = json.loads((out / "sweep.json").read_text())
    assert [c["settings"] for c in summary["configurations"]] == [["train.lr=0.001"],
                                                                  ["train.lr=0.01"]]
    assert summary["groups"] == [["c00_seed0", "c00_seed1", "c01_seed0", "c01_seed1"]]
    for row in summary["configurations"]:
        results = [json.loads((out / m / "result.json").read_text()) for m in row["members"]]
        for split in ("valid", "test"):
            values = [r[split]["recall@20"] for r in results]
            assert row[split]["recall@20"]["mean"] == pytest.approx(statistics.fmean(values))
            assert row[split]["recall@20"]["std"] == pytest.approx(statistics.stdev(values))
        assert row["best_epochs"] == [r["best_epoch"] for r in results]
    means = [c["valid"]["recall@20"]["mean"] for c in summary["configurations"]]
    assert summary["winner"] == max(range(2), key=lambda i: means[i])
    assert summary["selected_on"] == "valid"
    md = (out / "sweep.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith(("| c0", "| **c0"))]
    assert len(rows) == 2 and f"| **c{summary['winner']:02d}** |" in md
    for member in ("c00_seed0", "c01_seed1"):
        names = sorted(p.name for p in (out / member).iterdir())
        assert names == ["best", "config.toml", "metrics.jsonl", "result.json", "train.log"]
    code, _, err = run_cli("sweep", *QUICK, "--grid", "train.lr=1e-3", "--out", out)
    assert code == 2 and "finished sweep" in err


@pytest.mark.parametrize("args, words", [
    (["--grid", "train.lrr=1e-3,1e-2"], ["--grid train.lrr", "unknown config key", "train.lr"]),
    (["--grid", "train.lr=fast,1e-2"], ["train.lr", "float"]),
    (["--grid", "train.lr="], ["--grid", "no values"]),
    (["--grid", "model.name=lightgnc"], ["model.name", "lightgcn"]),
    (["--random", "model.dim=8:64"], ["--random", "model.dim", "not a float"]),
    (["--random", "train.lr=1e-2:1e-3:log", "--samples", "2"], ["LOW < HIGH"]),
    (["--seeds", "0", "1", "2", "--set", "train.n_devices=2"], ["3 members", "2 devices"]),
    (["--max-group", "-1"], ["--max-group -1", ">= 0"]),
    (["--seeds", "0", "1", "--max-group", "1", "--set", "train.n_devices=2"],
     ["a group of 1 members", "2 devices"]),
])
def test_bad_sweeps_stop_with_one_line_and_write_nothing(run_cli, tmp_path, args, words):
    out = tmp_path / "sw"
    devices = [] if "train.n_devices=2" in args else ["--set", "train.n_devices=1"]
    base = QUICK[:QUICK.index("train.n_devices=1") - 1] + QUICK[QUICK.index("train.n_devices=1") + 1:]
    code, _, err = run_cli("sweep", *base, *devices, *args, "--out", out)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("recgoat-jax: error: ")
    for w in words:
        assert w in err, (w, err)
    assert not out.exists()


def test_max_group_trains_chunks_and_a_resume_keeps_the_finished_ones(run_cli, tmp_path):
    out = tmp_path / "sw"
    args = ["sweep", *QUICK, "--grid", "train.lr=1e-3,1e-2", "--seeds", "0", "1",
            "--max-group", "2", "--out", out]
    code, _, err = run_cli(*args)
    assert code == 0, err
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["groups"] == [["c00_seed0", "c00_seed1"], ["c01_seed0", "c01_seed1"]]
    assert {json.loads((out / m / "result.json").read_text())["sweep_group_size"]
            for m in ("c00_seed0", "c01_seed1")} == {2}
    # interrupted inside the second chunk (no checkpoint): the first chunk is not retrained
    (out / "sweep.json").unlink()
    (out / "c01_seed1" / "result.json").unlink()
    first = {m: (out / m / "result.json").stat().st_mtime_ns for m in ("c00_seed0", "c00_seed1")}
    before = json.loads((out / "c01_seed0" / "result.json").read_text())
    code, _, err = run_cli(*args, "--resume")
    assert code == 0, err
    assert {m: (out / m / "result.json").stat().st_mtime_ns for m in first} == first
    after = json.loads((out / "c01_seed0" / "result.json").read_text())
    assert after["valid"]["recall@20"] == pytest.approx(before["valid"]["recall@20"], abs=1e-5)
    assert (out / "c01_seed1" / "result.json").exists()
    assert json.loads((out / "sweep.json").read_text())["winner"] == summary["winner"]
