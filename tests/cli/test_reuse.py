"""Re-using a trained run: `evaluate --run`, `recommend --run`, and the discoverability
commands (`--version`, `config show | keys | presets`, packaged presets)."""

from __future__ import annotations

import json
import tomllib

import numpy as np
import pytest

from recgoat_jax import __version__, config as C
from recgoat_jax.data.synthetic import generate


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A short RecGOAT run on `tiny` (user side on): its --out folder."""
    from recgoat_jax.cli import main
    out = tmp_path_factory.mktemp("reuse") / "run"
    assert main(["train", "--config", "recgoat", "--preset", "tiny", "--out", str(out),
                 "--quiet", "--set", "train.epochs=4", "--set", "eval.every=2",
                 "--set", "model.dim=16"]) == 0
    return out


def test_best_parameters_re_evaluate_to_the_reported_metrics(run_cli, trained_run):
    result = json.loads((trained_run / "result.json").read_text())
    assert result["best_params"] == "best/params.npz"
    best = json.loads((trained_run / "best" / "best.json").read_text())
    assert best["epoch"] == result["best_epoch"]
    code, out, err = run_cli("evaluate", "--run", trained_run)
    assert code == 0, err
    got = json.loads(out)
    assert got["test"] == pytest.approx(result["test"], abs=1e-6)
    assert got["valid"] == pytest.approx(result["valid"], abs=1e-6)
    # the same file through --params and the run's config
    code, out, err = run_cli("evaluate", "--config", trained_run / "config.toml",
                             "--params", trained_run / "best" / "params.npz")
    assert code == 0, err
    assert json.loads(out)["test"] == pytest.approx(result["test"], abs=1e-6)


def test_recommend_excludes_training_items_and_ranks_by_score(run_cli, trained_run):
    ds = generate("tiny")
    users = [0, 7, 31]
    code, out, err = run_cli("recommend", "--run", trained_run, "--users",
                             ",".join(map(str, users)), "--k", "10")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["user"] for r in rows] == [str(u) for u in users]
    for user, row in zip(users, rows):
        seen = set(ds.train[ds.train[:, 0] == user, 1].tolist())
        assert len(row["items"]) == 10 and not seen & set(row["items"])
        assert row["scores"] == sorted(row["scores"], reverse=True)
    code, tsv, _ = run_cli("recommend", "--run", trained_run, "--users", "7", "--k", "3",
                           "--format", "tsv")
    lines = tsv.strip().splitlines()
    assert lines[0] == "user\trank\titem\tscore" and len(lines) == 4
    assert [int(x.split("\t")[2]) for x in lines[1:]] == rows[1]["items"][:3]
    code, _, err = run_cli("recommend", "--run", trained_run, "--users", "999")
    assert code == 2 and "out of range" in err


def test_top_k_unseen_against_a_direct_ranking():
    from recgoat_jax.cli.recommend import top_k_unseen
    rng = np.random.default_rng(0)
    zu, zi = rng.standard_normal((2, 4)), rng.standard_normal((6, 4))
    train = np.array([[0, 1], [0, 2], [1, 0], [1, 1], [1, 2], [1, 3], [1, 4]])
    items, scores = top_k_unseen(zu, zi, [0, 1], train, k=3)
    s0 = zu[0] @ zi.T
    want0 = [i for i in np.argsort(-s0) if i not in (1, 2)][:3]
    assert items[0].tolist() == want0
    assert items[1].tolist() == [5, -1, -1]  # user 1 has one unseen item
    assert np.isneginf(scores[1, 1:]).all()


def test_version_and_config_commands(run_cli, capsys):
    from recgoat_jax.cli import main
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and __version__ in capsys.readouterr().out
    code, out, _ = run_cli("config", "show", "--config", "recgoat", "--set", "train.lr=0.01")
    assert code == 0
    shown = tomllib.loads(out)  # the comments do not break TOML
    assert C.from_dict(shown) == C.load("recgoat", ["train.lr=0.01"])
    assert "default 0.0008" in out  # each line names its default
    code, out, _ = run_cli("config", "keys")
    keys = [line.split()[0] for line in out.strip().splitlines()]
    assert keys == [k for k, _, _ in C.fields_table()]
    assert all(len(line.split()) > 3 for line in out.strip().splitlines())  # help on each
    assert "model.name" in keys and "'lightgcn'" in out
    code, out, _ = run_cli("config", "presets")
    assert {"recgoat", "lightgcn", "recgoat-reference"} <= set(out.split())


def test_every_packaged_preset_loads_and_has_help():
    for name in C.packaged_presets():
        C.load(name)
    assert all(meta["help"] for _, _, meta in C.fields_table())


def test_plot_writes_a_png_for_one_and_for_two_overlaid_runs(run_cli, trained_run, tmp_path):
    pytest.importorskip("matplotlib")
    lgn = tmp_path / "lgn"
    assert run_cli("train", "--config", "lightgcn", "--preset", "tiny", "--out", lgn,
                   "--quiet", "--set", "train.epochs=4", "--set", "eval.every=2")[0] == 0
    sizes = {}
    for name, runs in (("one", [trained_run]), ("two", [trained_run, lgn])):
        png = tmp_path / f"{name}.png"
        code, out, err = run_cli("plot", *runs, "--out", png)
        assert code == 0, err
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
        sizes[name] = len(data)
    code, _, err = run_cli("plot", trained_run, tmp_path / "nope", "--out", tmp_path / "x.png")
    assert code == 2 and "nope" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("plot", trained_run, "--labels", "a,b", "--out", tmp_path / "x.png")
    assert code == 2 and "--labels" in err
