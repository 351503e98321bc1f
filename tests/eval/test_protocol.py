"""Model selection: scripted metric sequences through both protocols."""

from __future__ import annotations

import json
import math

import pytest

from recgoat_jax.eval.protocol import (init_early_stopping, selection_result, should_evaluate,
                                       state_from_dict, state_to_dict, update)


def run_protocol(protocol, n_epochs, valid_at, test_at, every=None, **update_kwargs):
    """Drive a training loop's evaluation calls over epochs 1..n_epochs; returns (final state,
    evaluated epochs, epoch at which it stopped or None)."""
    state = init_early_stopping(protocol)
    evaluated = []
    for epoch in range(1, n_epochs + 1):
        if not should_evaluate(protocol, epoch, every):
            continue
        evaluated.append(epoch)
        state, _, stop = update(state, epoch, valid_at(epoch), test_at(epoch), **update_kwargs)
        if stop:
            return state, evaluated, epoch
    return state, evaluated, None


def test_mmrec_selects_on_valid_and_stops_after_patience():
    valid_recall = [0.10, 0.20, 0.20, 0.15, 0.25, 0.24, 0.24, 0.25, 0.10, 0.90, 0.90]
    # test peaks where valid does not: the report must still be test at the best-valid epoch
    test_recall = [0.5, 0.1, 0.1, 0.9, 0.2, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]
    state, evaluated, stopped_at = run_protocol(
        "mmrec", len(valid_recall),
        valid_at=lambda e: {"recall@20": valid_recall[e - 1], "ndcg@20": 0.0},
        test_at=lambda e: {"recall@20": test_recall[e - 1], "epoch": float(e)},
        every=1, patience=3)
    # best 0.25 first reached at epoch 5 (the tie at epoch 8 does not replace it); epochs 6-9
    # are 4 > patience = 3 evaluations without improvement, so it stops at epoch 9
    assert evaluated == list(range(1, 10))
    assert stopped_at == 9
    assert state.best_epoch == 5
    assert state.best_value == 0.25
    result = selection_result(state)
    assert result["selected_on"] == "valid"
    assert result["best_epoch"] == 5
    assert result["metric"] == "recall@20"
    assert result["valid"] == {"recall@20": 0.25, "ndcg@20": 0.0}
    assert result["test"] == {"recall@20": 0.2, "epoch": 5.0}


def test_mmrec_evaluates_every_n_epochs_and_counts_evaluations_not_epochs():
    # improves at each evaluation up to epoch 6, then flat
    state, evaluated, stopped_at = run_protocol(
        "mmrec", 100,
        valid_at=lambda e: {"recall@20": min(e - 1, 5) / 10},
        test_at=lambda e: {"recall@20": 0.0},
        every=2, patience=2)
    assert evaluated[:4] == [2, 4, 6, 8]  # after the 2nd, 4th, ... epoch, as MMRec's
    assert state.best_epoch == 6
    assert stopped_at == 12  # evaluations at 8, 10, 12 did not improve: 3 > patience 2


def test_reference_selects_on_test_every_20_epochs_and_never_stops():
    def test_ndcg(epoch):
        return 0.3 if epoch == 59 else 0.1 + epoch / 10_000

    state, evaluated, stopped_at = run_protocol(
        "reference", 400,
        valid_at=lambda e: None,  # the reference never evaluates on valid
        test_at=lambda e: {"ndcg@20": test_ndcg(e - 1), "recall@20": 1.0 - e / 1000},
        patience=2)
    assert evaluated == list(range(20, 401, 20))
    assert stopped_at is None  # 17 evaluations without improvement, patience 2: no stop
    assert state.best_epoch == 60
    result = selection_result(state)
    assert result["selected_on"] == "test"
    assert result["metric"] == "ndcg@20"
    assert result["test"]["ndcg@20"] == 0.3
    assert result["valid"] == {}


def test_nan_never_improves_and_missing_metric_is_named():
    state = init_early_stopping("mmrec")
    state, improved, _ = update(state, 0, {"recall@20": 0.1}, {})
    assert improved
    state, improved, _ = update(state, 1, {"recall@20": math.nan}, {})
    assert not improved and state.best_epoch == 0 and state.evals_since_best == 1
    with pytest.raises(KeyError, match="selects on valid 'recall@20'.*'ndcg@20'"):
        update(state, 2, {"ndcg@20": 0.5}, {})
    with pytest.raises(ValueError, match="'leaky' is unknown"):
        init_early_stopping("leaky")


def test_state_round_trips_through_json():
    state = init_early_stopping("reference")
    assert state_from_dict(json.loads(json.dumps(state_to_dict(state)))) == state
    state, _, _ = update(state, 19, None, {"ndcg@20": 0.25, "recall@20": 0.5})
    state, _, _ = update(state, 39, None, {"ndcg@20": 0.2, "recall@20": 0.6})
    restored = state_from_dict(json.loads(json.dumps(state_to_dict(state))))
    assert restored == state
    # a restored state continues exactly as the original would
    assert update(restored, 59, None, {"ndcg@20": 0.3}) == update(state, 59, None,
                                                                    {"ndcg@20": 0.3})
    with pytest.raises(ValueError, match="unknown fields \\['extra'\\]"):
        state_from_dict({**state_to_dict(state), "extra": 1})
