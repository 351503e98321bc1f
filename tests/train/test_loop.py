import json

import jax
import numpy as np

from recgoat_jax import config as C
from recgoat_jax.train.epoch import epoch_batches
from recgoat_jax.train.loop import Trainer

TINY = ["data.preset=tiny", "train.batch_size=128", "model.dim=16", "eval.every=1",
        "eval.ks=[5, 10, 20]", "eval.user_batch=32"]


def test_epoch_batches_cover_every_pair_once_and_mask_the_padding():
    idx, mask, neg, keys = epoch_batches(jax.random.PRNGKey(0), 300, 40, 128)
    assert idx.shape == mask.shape == neg.shape == (3, 128) and keys.shape[0] == 3
    assert sorted(np.asarray(idx)[np.asarray(mask)].tolist()) == list(range(300))
    assert int(mask.sum()) == 300 and not bool(mask[-1, -1])
    assert 0 <= int(neg.min()) and int(neg.max()) < 40


def test_no_recompilation_after_the_first_epoch(tiny):
    trainer = Trainer(C.load(None, TINY + ["model.name=lightgcn"]), tiny)
    state = trainer.init_state()
    for _ in range(3):
        state, stats, _ = trainer.train_epoch(state)
    assert trainer.epoch_fn._cache_size() == 1
    assert int(state.epoch) == 3


def test_same_seed_same_run_and_loss_goes_down(tiny, tmp_path):
    cfg = C.load(None, TINY + ["model.name=lightgcn", "train.epochs=6", "train.lr=0.01"])
    r1 = Trainer(cfg, tiny).run(tmp_path / "a", progress=False)
    r2 = Trainer(cfg, tiny).run(tmp_path / "b", progress=False)
    lines = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    lines2 = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [x["loss"] for x in lines] == [x["loss"] for x in lines2]
    assert r1["test"] == r2["test"]
    assert lines[-1]["loss"] < lines[0]["loss"]
    other = C.replace(cfg, **{"train.seed": 7})
    r3 = Trainer(other, tiny).run(None, progress=False)
    assert r3["final_loss"] != r1["final_loss"]


def test_run_outputs(tiny, tmp_path):
    cfg = C.load(None, TINY + ["model.name=mf", "train.epochs=3"])
    result = Trainer(cfg, tiny).run(tmp_path, progress=False)
    saved = json.loads((tmp_path / "result.json").read_text())
    for key in ("model", "dataset", "protocol", "best_epoch", "valid", "test",
                "epoch_seconds_median", "first_epoch_seconds", "n_params", "selected_on"):
        assert key in saved
    assert saved["model"] == "mf" and saved["selected_on"] == "valid"
    assert {"recall@20", "ndcg@20", "precision@5", "hit@10"} <= set(saved["test"])
    assert saved["n_params"] == (tiny.n_users + tiny.n_items) * 16
    assert C.load(tmp_path / "config.toml") == cfg
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and "valid/recall@20" in json.loads(lines[0])
    assert result["best_epoch"] in (1, 2, 3)


def test_reference_protocol_selects_on_test(tiny):
    cfg = C.load(None, TINY + ["model.name=mf", "train.epochs=4", "eval.protocol=reference",
                               "eval.every=2"])
    result = Trainer(cfg, tiny).run(None, progress=False)
    assert result["selected_on"] == "test" and result["valid"] == {}
    assert result["best_epoch"] in (2, 4)


def test_popularity_needs_no_training(tiny):
    result = Trainer(C.load(None, TINY + ["model.name=popularity"]), tiny).run(None, progress=False)
    assert result["epochs_run"] == 0 and result["test"]["recall@20"] > 0
