"""A sweep member is the solo run with the same config: losses per epoch, best epoch and test
metrics; members with other hyperparameters differ and each equals its own solo run; a member
that stopped stays frozen; bad groups are refused naming the key."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from recgoat_jax import config as C
from recgoat_jax.sweep import GroupTrainer, SweepError
from recgoat_jax.train.loop import train

BASE = ['data.preset="tiny"', "train.batch_size=128", "eval.every=1"]


def lines(folder):
    return [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]


def assert_member_equals_solo(member_dir, member_result, cfg, tiny, solo_dir, rtol,
                              metric_tol=1e-5, params_rtol=None):
    solo = train(cfg, tiny, solo_dir, progress=False)
    a, b = lines(member_dir), lines(solo_dir)
    assert [x["epoch"] for x in a] == [x["epoch"] for x in b]
    for x, y in zip(a, b):
        assert x["loss"] == pytest.approx(y["loss"], rel=rtol), (x["epoch"], x["loss"], y["loss"])
    assert member_result["best_epoch"] == solo["best_epoch"]
    assert member_result["test"] == pytest.approx(solo["test"], abs=metric_tol)
    if params_rtol is not None:  # the selected parameters
        np.testing.assert_allclose(
            *[np.concatenate([np.ravel(v) for _, v in sorted(np.load(d / "best" / "params.npz")
                                                             .items())])
              for d in (member_dir, solo_dir)], rtol=params_rtol, atol=params_rtol)
    # the member's folder holds what a solo run's does
    assert (sorted(p.name for p in member_dir.iterdir())
            == sorted(p.name for p in solo_dir.iterdir()))
    assert set(json.loads((member_dir / "result.json").read_text())) >= set(solo) - {"best_params"}
    assert C.load(member_dir / "config.toml") == cfg
    return solo


RECGOAT_MEMBER = ["loss.cl_weight=0.3", "model.user_gate_init=0.3", "model.oat.beta_text=0.5",
                  "model.dropout=0.2", "model.attn_dropout=0.0", "model.oat.epsilon=0.05"]


# One member per step (train.sweep_vmap=1, the CPU default): each member runs its solo run's
# program, so members equal their solo runs (measured: bit-equal). Vmapped members (the
# accelerator default) sum in another order: RecGOAT drifts 1e-7 at epoch 1, amplified about
# 5x an epoch by training (its transport plan at epsilon 0.01; at epoch 2 the drift was 2e-5 on
# one machine and 9e-5 on another), so vmapped RecGOAT runs its transport at epsilon 1 (0.5
# for the third member), where rounding is not amplified, and gets 2 epochs and 3e-5.
@pytest.mark.parametrize("name, epochs, vmap, rtol", [
    ("lightgcn", 4, 1, 1e-5), pytest.param("recgoat", 4, 1, 1e-5, marks=pytest.mark.slow),
    ("lightgcn", 3, 3, 1e-5), ("recgoat", 2, 3, 3e-5)])
def test_members_equal_their_solo_runs_and_differ_from_each_other(tiny, tmp_path, name, epochs,
                                                                  vmap, rtol):
    common = BASE + [f"train.epochs={epochs}", "train.n_devices=1", f"train.sweep_vmap={vmap}"]
    per_member = [["train.seed=0"], ["train.seed=1"], ["train.seed=0", "train.lr=2e-3",
                                                        "loss.decay=1e-3"]]
    if name == "recgoat":
        common += ["model.user_side=true"]  # the paper's user side too (off by default)
        per_member[2] += RECGOAT_MEMBER
        if vmap > 1:
            common += ["model.oat.epsilon=1.0"]
            per_member[2] += ["model.oat.epsilon=0.5"]
    cfgs = [C.load(name, common + extra) for extra in per_member]
    trainer = GroupTrainer(cfgs, tiny)
    assert trainer.chunk == vmap
    results = trainer.run([tmp_path / f"m{i}" for i in range(3)])
    exact = vmap == 1 or name == "lightgcn"
    # Vmapped RecGOAT: the drift above may swap two items at a rank cut-off for a user (allow
    # one user's worth of a metric: 60 users in `tiny`), and Adam turns it into visible
    # differences of weights with tiny gradients (not compared).
    metric_tol = 1e-5 if exact else 1.0 / 60 + 1e-6
    params_rtol = 1e-5 if exact else None
    finals = []
    for i, cfg in enumerate(cfgs):
        assert_member_equals_solo(tmp_path / f"m{i}", results[i], cfg, tiny,
                                  tmp_path / f"solo{i}", rtol, metric_tol, params_rtol)
        finals.append(results[i]["final_loss"])
    assert len(set(finals)) == 3  # other seeds / hyperparameters really train other models


# On several devices XLA compiles the per-device program as an SPMD partition, with other
# fusions than the 1-device program: members then equal their solo runs to rounding that
# training amplifies. RecGOAT measured (CSR graph kernels): members 0-2 within 2.4e-7 of their
# solo losses over 3 epochs; member 3 (lr 4e-3) 2e-7, 9e-7, then 2.6e-5 at epoch 3. With the
# default's 500 Sinkhorn iterations (was 100) one member's test NDCG@20 moved 8e-5: a near-tie
# of one user's ranking, so RecGOAT's metrics get the vmapped test's one-user tolerance.
# LightGCN stays within 1e-5 everywhere.
@pytest.mark.parametrize("name", ["lightgcn", pytest.param("recgoat", marks=pytest.mark.slow)])
def test_member_axis_sharded_over_four_devices_equals_solo_runs(tiny, tmp_path, name):
    assert jax.device_count() >= 4
    extra = RECGOAT_MEMBER if name == "recgoat" else []
    user_side = ["model.user_side=true"] if name == "recgoat" else []
    cfgs = [C.load(name, BASE + user_side + ["train.epochs=3", "train.n_devices=4",
                                             f"train.seed={s}", f"train.lr={lr}"]
                   + (extra if i == 2 else []))
            for i, (s, lr) in enumerate([(0, 1e-3), (1, 1e-3), (0, 4e-3), (2, 4e-3)])]
    trainer = GroupTrainer(cfgs, tiny)
    assert all(len(x.sharding.device_set) == 4 for x in jax.tree.leaves(trainer.init_state()))
    results = trainer.run([tmp_path / f"m{i}" for i in range(4)])
    for i, cfg in enumerate(cfgs):
        solo_cfg = C.replace(cfg, **{"train.n_devices": 1})
        solo = train(solo_cfg, tiny, tmp_path / f"solo{i}", progress=False)
        for x, y in zip(lines(tmp_path / f"m{i}"), lines(tmp_path / f"solo{i}")):
            assert x["loss"] == pytest.approx(y["loss"], rel=1e-4 if name == "recgoat" else 1e-5)
        assert results[i]["best_epoch"] == solo["best_epoch"]
        tol = 1.0 / 60 + 1e-6 if name == "recgoat" else 1e-5  # tiny: 60 users
        assert results[i]["test"] == pytest.approx(solo["test"], abs=tol)


@pytest.mark.parametrize("vmap", [1, 2])
def test_a_stopped_member_stays_bit_identical(tiny, vmap):
    cfgs = [C.load("lightgcn", BASE + ["train.epochs=3", "train.n_devices=1", f"train.seed={s}",
                                       f"train.sweep_vmap={vmap}"]) for s in (0, 1)]
    trainer = GroupTrainer(cfgs, tiny)
    state, _, _ = trainer.train_epoch(trainer.init_state(), np.array([True, True]))
    before = jax.tree.map(lambda x: np.asarray(x[1]).copy(), state)
    running_before = jax.tree.map(lambda x: np.asarray(x[0]).copy(), state)
    for _ in range(2):
        state, _, _ = trainer.train_epoch(state, np.array([True, False]))
    after = jax.tree.map(lambda x: np.asarray(x[1]), state)
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
        np.testing.assert_array_equal(a, b)
    moved = jax.tree.map(lambda x: np.asarray(x[0]), state)
    assert not np.array_equal(moved.params["embedding_user"],
                              running_before.params["embedding_user"])


def test_early_stopped_members_end_at_their_own_epoch(tiny, tmp_path):
    # patience 0: each member stops after its first evaluation without improvement
    cfgs = [C.load("lightgcn", BASE + ["train.epochs=30", "train.n_devices=1", "eval.patience=0",
                                       f"train.seed={s}", f"train.lr={lr}"])
            for s, lr in [(0, 1e-2), (1, 1e-4)]]
    results = GroupTrainer(cfgs, tiny).run([tmp_path / "a", tmp_path / "b"])
    for i, cfg in enumerate(cfgs):
        solo = train(cfg, tiny, tmp_path / f"solo{i}", progress=False)
        assert results[i]["epochs_run"] == solo["epochs_run"]
        assert results[i]["best_epoch"] == solo["best_epoch"]


def test_a_diverged_member_stops_alone_and_its_config_is_never_chosen(tiny, tmp_path):
    from recgoat_jax.sweep.report import summarise
    from recgoat_jax.sweep.spec import expand
    from recgoat_jax.train.guard import TrainingDiverged

    # lr 1e30: the first Adam step overflows the embeddings, so the epoch's loss is inf/NaN
    members = expand("lightgcn", BASE + ["train.epochs=3", "train.n_devices=1"],
                     [("train.lr=1e-2",), ("train.lr=1e30",)], [0], [2025])
    with pytest.raises(TrainingDiverged):  # a solo run with that config stops with the guard
        train(members[1].cfg, tiny, tmp_path / "solo", progress=False)
    results = GroupTrainer([m.cfg for m in members], tiny).run(
        [tmp_path / "good", tmp_path / "bad"])
    good, bad = results
    assert good["diverged"] is None and good["epochs_run"] == 3 and good["valid"]
    assert "epoch 1" in bad["diverged"] and bad["epochs_run"] == 0 and not bad["valid"]
    assert json.loads((tmp_path / "bad" / "result.json").read_text())["diverged"] == bad["diverged"]
    assert "diverged, stopped" in (tmp_path / "bad" / "train.log").read_text()
    # a diverged member's config loses even when its valid metric looks better
    rigged = [good, dict(bad, valid={"recall@20": 1.0}, test={"recall@20": 1.0})]
    summary = summarise(members, rigged, "recall@20")
    assert summary["winner"] == members[0].config_id
    assert [row["diverged"] for row in summary["configurations"]] == [0, 1]


def test_groups_refuse_shape_keys_and_indivisible_member_counts(tiny):
    a = C.load("lightgcn", BASE + ["train.n_devices=1"])
    with pytest.raises(SweepError, match="'model.dim' differs between members"):
        GroupTrainer([a, C.replace(a, **{"model.dim": 32})], tiny)
    with pytest.raises(SweepError, match="'model.n_layers' differs"):
        GroupTrainer([a, C.replace(a, **{"model.n_layers": 2})], tiny)
    three = C.replace(a, **{"train.n_devices": 2})
    with pytest.raises(SweepError, match="3 members cannot be split over 2 devices"):
        GroupTrainer([three] * 3, tiny)


def test_a_model_without_parameters_sweeps_like_its_solo_run(tiny, tmp_path):
    cfgs = [C.load("popularity", BASE + ["train.n_devices=1", f"train.seed={s}"]) for s in (0, 1)]
    results = GroupTrainer(cfgs, tiny).run([tmp_path / "a", tmp_path / "b"])
    solo = train(cfgs[0], tiny, tmp_path / "solo", progress=False)
    for result in results:
        assert result["test"] == pytest.approx(solo["test"], abs=1e-6)
        assert result["test"]["recall@20"] > 0
