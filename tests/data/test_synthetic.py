"""Synthetic presets: sizes, determinism, planted structure, feature informativeness."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from recgoat_jax.data import PRESETS, generate, make_synthetic
from recgoat_jax.data import synthetic
from recgoat_jax.data.synthetic import Planted, planted_structure, probe_r2


def n_pairs(ds) -> int:
    return len(ds.train) + len(ds.valid) + len(ds.test)


def test_tiny_preset_shapes_and_speed():
    start = time.perf_counter()
    ds = generate("tiny")
    assert time.perf_counter() - start < 1.0
    assert (ds.n_users, ds.n_items, n_pairs(ds)) == (60, 45, 600)
    assert {k: v.shape for k, v in ds.item_features.items()} == {"text": (45, 24),
                                                                  "image": (45, 40)}
    assert ds.user_features["text"].shape == (60, 24)
    np.testing.assert_allclose(np.linalg.norm(ds.item_features["text"], axis=1), 1.0, rtol=1e-5)
    assert (ds.item_features["image"] >= 0).all() and (ds.item_features["image"] > 0).any()
    per_user = np.bincount(np.concatenate([ds.train, ds.valid, ds.test])[:, 0], minlength=60)
    assert per_user.min() >= 5
    assert ds.source == "synthetic:tiny"


def test_small_preset_sizes():
    ds = generate("small")
    assert (ds.n_users, ds.n_items, n_pairs(ds)) == (3000, 2000, 60000)
    assert 0.75 < len(ds.train) / n_pairs(ds) < 0.85
    assert len(ds.valid) == len(ds.test) > 0
    assert {k: v.shape[1] for k, v in ds.item_features.items()} == {"text": 128, "image": 256}
    assert ds.user_features["text"].shape == (3000, 128)


@pytest.mark.parametrize("seed", [2025, 2026])
def test_longtail_preset_is_sparse_in_training(seed):
    """Most items have fewer than 5 TRAINING interactions (the protocol's long-tail setting),
    with `small`'s feature shapes and no more training pairs than `small`."""
    ds = generate("longtail", seed=seed)
    assert (ds.n_users, ds.n_items, n_pairs(ds)) == (3000, 4000, 30000)
    per_item = np.bincount(ds.train[:, 1], minlength=ds.n_items)
    assert (per_item < 5).mean() > 0.5
    assert (per_item == 0).mean() < 0.3  # a tail, not a catalogue of unseen items
    assert per_item.max() > 100  # with a popular head
    assert len(ds.train) < 0.5 * PRESETS["small"].n_interactions  # small trains on 80%
    assert {k: v.shape[1] for k, v in ds.item_features.items()} == {"text": 128, "image": 256}
    assert ds.user_features["text"].shape == (3000, 128)


def test_benchmark_presets_have_the_published_sizes():
    sizes = {k: (p.n_users, p.n_items, p.n_interactions) for k, p in PRESETS.items()}
    assert sizes["baby"] == (19445, 7050, 160792)
    assert sizes["sports"] == (35598, 18357, 296337)
    assert sizes["electronics"] == (192403, 63001, 1689188)
    assert sizes["tiktok"] == (9319, 6710, 59541)
    assert PRESETS["baby"].feature_dims == {"text": 384, "image": 4096}
    assert PRESETS["tiktok"].feature_dims == {"text": 768, "image": 128, "audio": 128}


@pytest.mark.slow
def test_baby_preset_generates():
    ds = generate("baby")
    assert (ds.n_users, ds.n_items, n_pairs(ds)) == (19445, 7050, 160792)
    assert ds.item_features["image"].shape == (7050, 4096)
    assert ds.item_features["image"].dtype == np.float32


def test_same_seed_same_dataset_other_seed_differs():
    a, b, c = generate("tiny", seed=3), generate("tiny", seed=3), generate("tiny", seed=4)
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(getattr(a, split), getattr(b, split))
    for m in a.item_features:
        np.testing.assert_array_equal(a.item_features[m], b.item_features[m])
    assert not np.array_equal(a.train, c.train)


def test_signal_overrides_change_only_the_features():
    base = generate("tiny")
    noisy = generate("tiny", feature_signal=0.0)
    text_only = generate("tiny", text_signal=1.0)
    np.testing.assert_array_equal(base.train, noisy.train)
    np.testing.assert_array_equal(base.test, noisy.test)
    assert not np.allclose(base.item_features["text"], noisy.item_features["text"])
    np.testing.assert_array_equal(base.item_features["image"], text_only.item_features["image"])
    assert synthetic.preset_signal("small") == {"text": 0.7, "image": 0.3}
    assert synthetic.preset_signal("small", -1.0, -1.0) == {"text": 0.7, "image": 0.3}
    assert synthetic.preset_signal("small", 0.5, 0.9) == {"text": 0.9, "image": 0.5}
    with pytest.raises(ValueError, match="feature signal for 'text' is 1.5"):
        generate("tiny", text_signal=1.5)
    with pytest.raises(ValueError, match="unknown synthetic preset 'big'"):
        generate("big")


def test_probe_r2_separates_signal_from_noise():
    rng = np.random.default_rng(0)
    factors = rng.standard_normal((2000, 4))
    mixed = factors @ rng.standard_normal((4, 32))
    assert probe_r2(mixed, factors) > 0.999
    assert probe_r2(rng.standard_normal((2000, 32)), factors) < 0.05


@pytest.mark.parametrize("modality", ["text", "image", "audio"])
def test_informativeness_knob(modality):
    def features(s: float) -> np.ndarray:
        ds = make_synthetic(300, 1200, 3000, {modality: 48}, {modality: s}, seed=11)
        return ds.item_features[modality]

    factors = planted_structure(300, 1200, seed=11).item_factors
    r2 = {s: probe_r2(features(s), factors) for s in (0.0, 0.3, 1.0)}
    assert r2[0.0] < 0.1  # pure noise: nothing to predict from
    assert r2[1.0] > 0.8  # noiseless (text is only row-normalised, image passes a ReLU)
    assert r2[0.0] < r2[0.3] < r2[1.0]


def test_oracle_user_features_follow_user_factors():
    ds = make_synthetic(1200, 40, 6000, {}, {"text": 1.0}, user_feature_dim=48, seed=2,
                        user_features="oracle")
    factors = planted_structure(1200, 40, seed=2).user_factors
    assert probe_r2(ds.user_features["text"], factors) > 0.85


def test_history_user_features_follow_the_training_items():
    ds = make_synthetic(1200, 40, 6000, {}, {"text": 1.0}, user_feature_dim=48, seed=2)
    planted = planted_structure(1200, 40, seed=2)
    # the mean planted factor of each user's training items, written out here
    history = np.zeros((1200, 16))
    for u in range(1200):
        history[u] = planted.item_factors[ds.train[ds.train[:, 0] == u, 1]].mean(0)
    assert probe_r2(ds.user_features["text"], history) > 0.85
    np.testing.assert_allclose(np.linalg.norm(ds.user_features["text"], axis=1), 1.0, rtol=1e-5)


def _tiny_profiles(ds, kind="history"):
    planted = planted_structure(ds.n_users, ds.n_items, seed=2025)
    return synthetic.user_text_features(ds, planted, 24, 0.7, 2025, kind)


def test_default_user_features_are_the_history_ones(tiny):
    np.testing.assert_array_equal(tiny.user_features["text"], _tiny_profiles(tiny))


def test_user_features_ignore_the_held_out_interactions(tiny):
    """The leak test: datasets that differ only in valid / test have the same user features;
    changing the training pairs does change them."""
    base = _tiny_profiles(tiny)
    held_out = np.concatenate([tiny.valid, tiny.test])
    rng = np.random.default_rng(0)
    shuffled = held_out[rng.permutation(len(held_out))]
    half = len(shuffled) // 2
    for valid, test in ((tiny.test, tiny.valid),  # swapped
                        (shuffled[:half], shuffled[half:]),  # redrawn split of the same pairs
                        (tiny.valid[:0], tiny.test[: len(tiny.test) // 3])):  # most dropped
        other = dataclasses.replace(tiny, valid=valid, test=test)
        np.testing.assert_array_equal(_tiny_profiles(other), base)
    # the valid pairs moved into train: the profiles now see them
    more_train = dataclasses.replace(tiny, train=np.concatenate([tiny.train, tiny.valid]),
                                     valid=tiny.valid[:0])
    changed = np.abs(_tiny_profiles(more_train) - base).max(axis=1) > 1e-4
    assert changed[np.unique(tiny.valid[:, 0])].all()
    # and the oracle does not depend on the interactions at all (it reads the planted factors)
    np.testing.assert_array_equal(_tiny_profiles(more_train, "oracle"),
                                  _tiny_profiles(tiny, "oracle"))


def test_oracle_user_features_are_the_old_construction():
    ds = generate("tiny", user_features="oracle")
    planted = planted_structure(60, 45, seed=2025)
    old = synthetic.make_features(planted.user_factors, 24, 0.7, "text",
                                  synthetic._rng(2025, "user_features/text"))
    np.testing.assert_array_equal(ds.user_features["text"], old)
    history = generate("tiny")
    np.testing.assert_array_equal(ds.train, history.train)
    np.testing.assert_array_equal(ds.item_features["text"], history.item_features["text"])
    assert not np.allclose(ds.user_features["text"], history.user_features["text"])
    with pytest.raises(ValueError, match="user_features = 'planted'"):
        generate("tiny", user_features="planted")


def test_users_without_training_items_get_a_fixed_noise_row(tiny):
    no_user_0 = dataclasses.replace(tiny, train=tiny.train[tiny.train[:, 0] != 0])
    a, b = _tiny_profiles(no_user_0), _tiny_profiles(no_user_0)
    np.testing.assert_array_equal(a, b)
    assert np.all(np.isfinite(a)) and np.linalg.norm(a[0]) == pytest.approx(1.0, rel=1e-5)


def test_data_config_chooses_the_user_features():
    from recgoat_jax import config as C
    from recgoat_jax.data.load import data_source, load_dataset
    cfg = C.load(None, ["data.preset=tiny", "data.user_features=oracle"])
    assert C.load(None, []).data.user_features == "history"
    oracle = generate("tiny", user_features="oracle")
    np.testing.assert_array_equal(load_dataset(cfg.data).user_features["text"],
                                  oracle.user_features["text"])
    assert data_source(cfg.data)["user_features"] == "oracle"


def recall_at_20(scores: np.ndarray, ds) -> float:
    scores = np.array(scores, dtype=np.float32)
    scores[ds.train[:, 0], ds.train[:, 1]] = -np.inf
    top = np.argpartition(-scores, 20, axis=1)[:, :20]
    hit = np.zeros(scores.shape, bool)
    hit[ds.test[:, 0], ds.test[:, 1]] = True
    n_test = np.bincount(ds.test[:, 0], minlength=ds.n_users)
    users = n_test > 0
    return float((np.take_along_axis(hit, top, 1).sum(1)[users] / n_test[users]).mean())


def test_small_preset_rewards_personalisation():
    ds = generate("small")
    planted = planted_structure(ds.n_users, ds.n_items, seed=2025)
    popularity = np.bincount(ds.train[:, 1], minlength=ds.n_items).astype(np.float32)
    r_pop = recall_at_20(np.broadcast_to(popularity, (ds.n_users, ds.n_items)), ds)
    r_oracle = recall_at_20(planted.logits(np.arange(ds.n_users)), ds)
    assert r_pop < 0.2
    assert r_oracle > 3 * r_pop


def test_sampler_is_sampling_without_replacement_by_weight():
    # Three items with weights .6 / .3 / .1 and no affinity: each user draws two distinct items.
    weights = np.array([0.6, 0.3, 0.1])
    n_users = 20000
    planted = Planted(np.zeros((n_users, 16), np.float32), np.zeros((3, 16), np.float32),
                      np.log(weights).astype(np.float32), 3.0)
    pairs = synthetic._draw_interactions(planted, np.full(n_users, 2), seed=0)
    assert len({(u, i) for u, i in pairs}) == len(pairs) == 2 * n_users
    without_0 = n_users - len(np.unique(pairs[pairs[:, 1] == 0, 0]))
    # P({1, 2}) = .3 * .1 / .7 + .1 * .3 / .9 for successive sampling without replacement
    expected = 0.3 * 0.1 / 0.7 + 0.1 * 0.3 / 0.9
    assert abs(without_0 / n_users - expected) < 5 * np.sqrt(expected * (1 - expected) / n_users)


def test_inverse_cdf_draws_match_weights():
    rng = np.random.default_rng(0)
    weights = rng.random((2, 3, 4)).astype(np.float32)  # 2 rows, 12 items each
    weights[1, 2] = 0.0  # a zero block must never be drawn
    block_cdf = np.cumsum(weights.sum(axis=2), axis=1)
    rows = np.repeat([0, 1], 60000)
    got_rows, items = synthetic._inverse_cdf_draws(weights, block_cdf, rows, rng)
    assert len(items) == len(rows)
    for r in (0, 1):
        freq = np.bincount(items[got_rows == r], minlength=12) / 60000
        p = weights[r].ravel() / weights[r].sum()
        np.testing.assert_allclose(freq, p, atol=5 * np.sqrt(p.max() / 60000))
    assert not np.isin(items[got_rows == 1], [8, 9, 10, 11]).any()


def test_make_synthetic_rejects_impossible_requests():
    with pytest.raises(ValueError, match="n_interactions = 10: expected between 40 and 600"):
        make_synthetic(40, 30, 10, {}, {})
    with pytest.raises(ValueError, match="n_interactions = 700: expected between 200 and 600"):
        make_synthetic(40, 30, 700, {}, {})
    with pytest.raises(ValueError, match="no signal given for modality 'image'"):
        make_synthetic(40, 30, 300, {"image": 8}, {"text": 0.5})


def test_clustered_sampler_draws_exact_unique_pairs_that_follow_the_planted_taste():
    from recgoat_jax.data.synthetic import (PRESETS, _item_clusters, make_synthetic,
                                            planted_structure)

    assert PRESETS["xl"].sampler == "clustered"  # the preset the exact sampler cannot reach
    args = (4000, 3000, 60000, {"text": 8}, {"text": 0.7})
    ds = make_synthetic(*args, sampler="clustered", seed=3)
    pairs = np.concatenate([ds.train, ds.valid, ds.test]).astype(np.int64)
    assert len(pairs) == 60000 and len(np.unique(pairs[:, 0] * 3000 + pairs[:, 1])) == 60000
    again = make_synthetic(*args, sampler="clustered", seed=3)
    np.testing.assert_array_equal(ds.test, again.test)
    # held-out items sit in the clusters the user's planted factors prefer: the cluster of a
    # test item ranks in the top part of the user's cluster affinities (chance: 0.5)
    planted = planted_structure(4000, 3000, 3)
    cluster = _item_clusters(planted, 1024, 3)
    centre = np.stack([planted.item_factors[cluster == c].mean(0) if (cluster == c).any()
                       else np.full(16, -np.inf) for c in range(cluster.max() + 1)])
    affinity = planted.user_factors[ds.test[:, 0]] @ np.nan_to_num(centre, neginf=-1e9).T
    own = affinity[np.arange(len(ds.test)), cluster[ds.test[:, 1]]]
    percentile = (affinity > own[:, None]).mean(axis=1)
    assert percentile.mean() < 0.25
    with pytest.raises(ValueError, match="sampler"):
        make_synthetic(*args, sampler="dense")
