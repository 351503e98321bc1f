"""Full-ranking evaluation against a plain numpy implementation of REFERENCE.md section 5."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recgoat_jax.eval.metrics import metrics_at_ks, METRIC_NAMES
from recgoat_jax.eval.ranking import RankingEvaluator, masked_top_k

KS = (1, 5, 10, 20, 50)


def numpy_reference(z_user, z_item, train_pairs, test_pairs, ks):
    """Per-user metrics straight from the definitions: {user: {"recall@K": ...}}.

    Rank every non-training item by score (float64), ties to the lower item id (stable sort).
    """
    scores = z_user.astype(np.float64) @ z_item.astype(np.float64).T
    train_of, test_of = {}, {}
    for u, i in train_pairs:
        train_of.setdefault(int(u), set()).add(int(i))
    for u, i in test_pairs:
        test_of.setdefault(int(u), set()).add(int(i))
    out = {}
    for u, relevant in test_of.items():
        order = np.argsort(-scores[u], kind="stable")
        ranked = [int(i) for i in order if int(i) not in train_of.get(u, set())]
        metrics = {}
        for k in ks:
            top = ranked[:k]
            hit_flags = [1.0 if i in relevant else 0.0 for i in top]
            n_hits = sum(hit_flags)
            dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hit_flags))
            idcg = sum(1.0 / math.log2(r + 2) for r in range(min(len(relevant), k)))
            metrics[f"recall@{k}"] = n_hits / len(relevant)
            metrics[f"ndcg@{k}"] = dcg / idcg
            metrics[f"precision@{k}"] = n_hits / k
            metrics[f"hit@{k}"] = 1.0 if n_hits > 0 else 0.0
        out[u] = metrics
    return out


def dyadic_embeddings(rng, n, d, steps):
    """Entries on a 1/steps grid in [-1, 1]: float32 dot products are exact, so the ranking
    matches float64 numpy exactly (and coarse grids produce many exact ties)."""
    return (rng.integers(-steps, steps + 1, size=(n, d)) / steps).astype(np.float32)


def random_split(rng, n_users, n_items):
    """Train/test pairs with: users without test items, users with fewer test items than K,
    a hub user with almost every item in train, a user with more test items than max(KS)."""
    train, test = [], []
    for u in range(n_users):
        items = rng.permutation(n_items)
        if u == 3:  # hub: 280 of 300 items in train, so top-50 must reach masked items
            train += [(u, i) for i in items[:280]]
            test += [(u, i) for i in items[280:290]]
        elif u == 7:  # more test items than the largest K
            train += [(u, i) for i in items[:20]]
            test += [(u, i) for i in items[20:90]]
        elif u % 5 == 0:  # no test items: excluded from the averages
            train += [(u, i) for i in items[:rng.integers(1, 15)]]
        else:
            n_train, n_test = rng.integers(1, 30), rng.integers(1, 8)
            train += [(u, i) for i in items[:n_train]]
            test += [(u, i) for i in items[n_train:n_train + n_test]]
    return np.array(train, np.int32), np.array(test, np.int32)


@pytest.mark.parametrize("steps", [2, 256], ids=["many-ties", "few-ties"])
def test_matches_numpy_definitions(steps):
    rng = np.random.default_rng(steps)
    n_users, n_items, d = 75, 300, 8
    train, test = random_split(rng, n_users, n_items)
    z_user = dyadic_embeddings(rng, n_users, d, steps)
    z_item = dyadic_embeddings(rng, n_items, d, steps)
    # 16 does not divide the 60 evaluation users: the last batch is padded
    evaluator = RankingEvaluator(n_users, n_items, train, test, ks=KS, user_batch=16)
    expected = numpy_reference(z_user, z_item, train, test, KS)

    assert list(evaluator.eval_user_ids) == sorted(expected)
    assert all(u % 5 != 0 for u in evaluator.eval_user_ids)  # users without test items
    per_user = evaluator.per_user_metrics(jnp.asarray(z_user), jnp.asarray(z_item))
    means = evaluator(jnp.asarray(z_user), jnp.asarray(z_item))
    assert sorted(means) == sorted(f"{m}@{k}" for m in METRIC_NAMES for k in KS)
    for key in means:
        want = np.array([expected[u][key] for u in evaluator.eval_user_ids])
        np.testing.assert_allclose(per_user[key], want, atol=1e-6, err_msg=key)
        assert means[key] == pytest.approx(want.mean(), abs=1e-6), key
    # the hub user's top-50 holds only 20 unmasked items: precision counts hits over 50
    hub = list(evaluator.eval_user_ids).index(3)
    assert per_user["recall@50"][hub] == 1.0
    assert per_user["precision@50"][hub] == pytest.approx(10 / 50)


def test_cutoff_larger_than_catalogue():
    rng = np.random.default_rng(1)
    n_users, n_items = 6, 12
    train = np.array([(u, u) for u in range(n_users)], np.int32)
    test = np.array([(u, (u + 1) % n_items) for u in range(n_users)]
                    + [(0, 5), (0, 9)], np.int32)
    z_user, z_item = (dyadic_embeddings(rng, n, 3, 64) for n in (n_users, n_items))
    evaluator = RankingEvaluator(n_users, n_items, train, test, ks=(5, 20), user_batch=4)
    expected = numpy_reference(z_user, z_item, train, test, (5, 20))
    got = evaluator(z_user, z_item)
    for key, value in got.items():
        assert value == pytest.approx(np.mean([m[key] for m in expected.values()]), abs=1e-6)
    assert got["recall@20"] == 1.0


def test_training_items_never_in_top_k():
    n_users, n_items, k = 40, 120, 10
    rng = np.random.default_rng(2)
    # 1-d popularity-style embeddings: every user scores item i as i, so the training items,
    # chosen among the highest ids, would fill the top-K if they were not masked
    z_user = np.ones((n_users, 1), np.float32)
    z_item = np.arange(n_items, dtype=np.float32)[:, None]
    train, test, train_of = [], [], {}
    for u in range(n_users):
        hub_extra = 60 if u == 0 else 0
        top = n_items - 1 - np.arange(20 + hub_extra)
        train_items = np.concatenate([top, rng.choice(n_items - 30 - hub_extra, 5,
                                                      replace=False)])
        train_items = np.unique(train_items)
        train_of[u] = set(train_items.tolist())
        train += [(u, i) for i in train_items]
        below = [i for i in range(n_items - 1, -1, -1) if i not in train_of[u]][:k]
        test += [(u, i) for i in below]  # the k best unmasked items
    train, test = np.array(train, np.int32), np.array(test, np.int32)

    evaluator = RankingEvaluator(n_users, n_items, train, test, ks=(k,), user_batch=16)
    means = evaluator(z_user, z_item)
    assert means[f"ndcg@{k}"] == pytest.approx(1.0)
    assert means[f"precision@{k}"] == pytest.approx(1.0)

    rows = np.repeat(np.arange(n_users), [len(train_of[u]) for u in range(n_users)])
    cols = np.concatenate([sorted(train_of[u]) for u in range(n_users)])
    _, top_items = masked_top_k(z_user, z_item, jnp.asarray(rows), jnp.asarray(cols), k)
    for u in range(n_users):
        assert not set(np.asarray(top_items[u]).tolist()) & train_of[u]


def test_second_call_does_not_recompile():
    rng = np.random.default_rng(3)
    n_users, n_items = 50, 80
    train, test = random_split_small(rng, n_users, n_items)
    evaluator = RankingEvaluator(n_users, n_items, train, test, ks=(5, 10), user_batch=8)
    first = evaluator(jnp.asarray(rng.normal(size=(n_users, 4)), jnp.float32),
                      jnp.asarray(rng.normal(size=(n_items, 4)), jnp.float32))
    assert evaluator.compiled_step_count() == 1

    compile_events = []

    def on_event(event, duration_secs, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compile_events.append(event)

    z_user = jnp.asarray(rng.normal(size=(n_users, 4)), jnp.float32)
    z_item = jnp.asarray(rng.normal(size=(n_items, 4)), jnp.float32)
    jax.monitoring.register_event_duration_secs_listener(on_event)
    try:
        second = evaluator(z_user, z_item)
    finally:
        jax.monitoring.unregister_event_duration_listener(on_event)
    assert compile_events == []
    assert evaluator.compiled_step_count() == 1
    assert second != first  # new embeddings were really ranked


def random_split_small(rng, n_users, n_items):
    train, test = [], []
    for u in range(n_users):
        items = rng.permutation(n_items)
        n_train, n_test = rng.integers(1, 10), rng.integers(0, 4)
        train += [(u, i) for i in items[:n_train]]
        test += [(u, i) for i in items[n_train:n_train + n_test]]
    return np.array(train, np.int32), np.array(test, np.int32)


def test_metric_formulas_on_a_hand_computed_hit_matrix():
    hits = jnp.array([[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 0]], bool)
    counts = jnp.array([3, 2, 0])  # the last row is padding
    got = np.asarray(jax.jit(metrics_at_ks, static_argnums=2)(hits, counts, (2, 4)))  # [B, m, k]
    recall, ndcg, precision, hit = (got[:, m, :] for m in range(4))
    np.testing.assert_allclose(recall[0], [1 / 3, 2 / 3], rtol=1e-6)
    np.testing.assert_allclose(precision[0], [1 / 2, 2 / 4], rtol=1e-6)
    np.testing.assert_allclose(hit[0], [1, 1])
    idcg2, idcg3 = 1 + 1 / math.log2(3), 1 + 1 / math.log2(3) + 1 / math.log2(4)
    np.testing.assert_allclose(ndcg[0], [1 / idcg2, (1 + 1 / math.log2(4)) / idcg3], rtol=1e-6)
    np.testing.assert_allclose(got[1], 0.0)
    np.testing.assert_allclose(got[2], 0.0)


@pytest.mark.parametrize("train, test, match", [
    (np.zeros((3, 3), np.int32), np.array([[0, 1]]), "train_pairs must be an integer"),
    (np.array([[0, 0]]), np.array([[0, 99]]), "eval_pairs row 0 has item id 99"),
    (np.array([[0, 1]]), np.array([[0, 1]]), "in both train_pairs and eval_pairs"),
    (np.array([[0, 1]]), np.zeros((0, 2), np.int32), "eval_pairs is empty"),
])
def test_bad_pairs_are_rejected_with_a_clear_message(train, test, match):
    with pytest.raises(ValueError, match=match):
        RankingEvaluator(4, 10, train, test, ks=(5,))


def test_wrong_embedding_shapes_are_rejected():
    evaluator = RankingEvaluator(4, 10, np.array([[0, 1]]), np.array([[0, 2]]), ks=(5,))
    with pytest.raises(ValueError, match=r"z_user \[4, d\] and z_item \[10, d\]"):
        evaluator(np.zeros((4, 3), np.float32), np.zeros((10, 2), np.float32))
