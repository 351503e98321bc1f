import json

import jax
import numpy as np
import pytest

from recgoat_jax import config as C
from recgoat_jax.cli import main
from recgoat_jax.convert import flatten
from recgoat_jax.data.synthetic import generate
from recgoat_jax.train.loop import Trainer

TINY = ["--set", "model.dim=8", "--set", "train.batch_size=64", "--set", "eval.ks=[5, 10]",
        "--set", "eval.metric=recall@10"]


def test_data_stats(capsys):
    assert main(["data", "stats", "--preset", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "users" in out and "60" in out and "sparsity" in out


def test_train_writes_the_run_files(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--preset", "tiny", "--out", str(out), "--quiet",
                 "--set", "model.name=lightgcn", "--set", "train.epochs=2", *TINY]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["model"] == "lightgcn" and result["dataset"] == "tiny"
    assert C.load(out / "config.toml").train.epochs == 2
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_bad_config_key_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--preset", "tiny", "--out", str(tmp_path),
                 "--set", "train.nope=1"]) == 2
    assert "train.nope" in capsys.readouterr().err


def test_evaluate_given_parameters_equals_the_trainer(tmp_path, capsys):
    cfg = C.load(None, ["data.preset=tiny", "model.name=lightgcn", "model.dim=8",
                        "eval.ks=[5, 10]", "eval.metric=recall@10"])
    trainer = Trainer(cfg, generate("tiny"))
    params = trainer.model.init(jax.random.PRNGKey(3))
    np.savez(tmp_path / "p.npz", **flatten(params))
    assert main(["evaluate", "--preset", "tiny", "--params", str(tmp_path / "p.npz"),
                 "--set", "model.name=lightgcn", *TINY[:2], *TINY[4:]]) == 0
    got = json.loads(capsys.readouterr().out)
    want = trainer.evaluate(params)
    for split in ("valid", "test"):
        assert got[split] == pytest.approx(want[split], abs=1e-7)
    assert main(["evaluate", "--preset", "tiny", "--params", str(tmp_path / "p.npz"),
                 "--set", "model.name=lightgcn", "--set", "model.dim=4"]) == 2
    assert "do not fit" in capsys.readouterr().err
