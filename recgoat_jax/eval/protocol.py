"""Model selection: when to evaluate, which epoch is best, when to stop.

Two protocols:

- ``"mmrec"`` (the MMRec / RecBole protocol, REFERENCE.md section 6): select on the VALID
  ``metric`` (default recall@20); stop once more than ``patience`` evaluations in a row brought
  no strict improvement (MMRec's ``cur_step > stopping_step``: with patience 20 the 21st
  non-improving evaluation stops); report test at the best-valid epoch.
- ``"reference"`` (what the public RecGOAT code does, section 5): evaluate on TEST, keep the
  best test ``metric`` (default ndcg@20), never stop early. This selects on the test set; the
  result says so with ``"selected_on": "test"``.

The state is a frozen dataclass of plain Python values (``state_to_dict`` / ``state_from_dict``
give a JSON-safe dict for checkpoints). Epochs count from 1 (the first epoch trained is 1;
0 stands for "no training", e.g. popularity).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class ProtocolSpec:
    """What a protocol selects on and whether it stops early."""

    selected_on: str  # "valid" | "test"
    early_stopping: bool
    default_metric: str
    default_every: int


PROTOCOLS: dict[str, ProtocolSpec] = {
    "mmrec": ProtocolSpec(selected_on="valid", early_stopping=True,
                          default_metric="recall@20", default_every=1),
    "reference": ProtocolSpec(selected_on="test", early_stopping=False,
                              default_metric="ndcg@20", default_every=20),
}


def protocol_spec(protocol: str) -> ProtocolSpec:
    """The ProtocolSpec of `protocol`; ValueError naming the known ones otherwise."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"eval protocol {protocol!r} is unknown: expected one of "
                         f"{sorted(PROTOCOLS)}")
    return PROTOCOLS[protocol]


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Model-selection state (immutable; `update` returns a new one).

    protocol: "mmrec" | "reference".
    metric: the selection metric key (e.g. "recall@20"); "" until the first update.
    best_value: the best selection-metric value so far; None before the first evaluation.
    best_epoch: epoch of best_value; -1 before the first evaluation.
    evals_since_best: evaluations since best_epoch that did not improve on it.
    n_evals: evaluations seen.
    best_valid, best_test: the valid / test metrics of best_epoch ({} if not evaluated).
    """

    protocol: str = "mmrec"
    metric: str = ""
    best_value: float | None = None
    best_epoch: int = -1
    evals_since_best: int = 0
    n_evals: int = 0
    best_valid: Mapping[str, float] = dataclasses.field(default_factory=dict)
    best_test: Mapping[str, float] = dataclasses.field(default_factory=dict)


def init_early_stopping(protocol: str = "mmrec") -> EarlyStopping:
    """A fresh state for `protocol`."""
    protocol_spec(protocol)
    return EarlyStopping(protocol=protocol)


def should_evaluate(protocol: str, epoch: int, every: int | None = None) -> bool:
    """Whether to evaluate after epoch `epoch` (1-based): when epoch % every == 0, as MMRec's
    trainer does. `every=None` takes the protocol's default (1 mmrec, 20 reference). The run
    loop evaluates the last epoch as well, whatever this says."""
    every = protocol_spec(protocol).default_every if every is None else int(every)
    if every < 1:
        raise ValueError(f"eval every must be >= 1 epoch, got {every}")
    return epoch % every == 0


def update(state: EarlyStopping, epoch: int, valid_metrics: Mapping[str, float] | None,
           test_metrics: Mapping[str, float] | None, metric: str | None = None,
           patience: int = 20) -> tuple[EarlyStopping, bool, bool]:
    """Record one evaluation; returns (new_state, improved, should_stop).

    The selection value is ``valid_metrics[metric]`` (mmrec) or ``test_metrics[metric]``
    (reference); `metric=None` takes the protocol's default. Improvement is strict (a tie keeps
    the earlier epoch); NaN never improves. `patience` only matters for mmrec.
    """
    spec = protocol_spec(state.protocol)
    metric = metric or state.metric or spec.default_metric
    valid = dict(valid_metrics or {})
    test = dict(test_metrics or {})
    selected = valid if spec.selected_on == "valid" else test
    if metric not in selected:
        raise KeyError(f"eval protocol {state.protocol!r} selects on {spec.selected_on} "
                       f"{metric!r}, but the {spec.selected_on} metrics hold only "
                       f"{sorted(selected)}")
    value = float(selected[metric])
    improved = not math.isnan(value) and (state.best_value is None or value > state.best_value)
    if improved:
        new_state = dataclasses.replace(
            state, metric=metric, best_value=value, best_epoch=int(epoch), evals_since_best=0,
            n_evals=state.n_evals + 1, best_valid=valid, best_test=test)
    else:
        new_state = dataclasses.replace(state, metric=metric,
                                        evals_since_best=state.evals_since_best + 1,
                                        n_evals=state.n_evals + 1)
    should_stop = spec.early_stopping and new_state.evals_since_best > patience
    return new_state, improved, should_stop


def selection_result(state: EarlyStopping) -> dict[str, Any]:
    """The result-file part: {"best_epoch", "selected_on", "metric", "protocol", "valid",
    "test"} with the valid / test metrics of the selected epoch."""
    return {
        "protocol": state.protocol,
        "selected_on": protocol_spec(state.protocol).selected_on,
        "metric": state.metric or protocol_spec(state.protocol).default_metric,
        "best_epoch": state.best_epoch,
        "valid": dict(state.best_valid),
        "test": dict(state.best_test),
    }


def state_to_dict(state: EarlyStopping) -> dict[str, Any]:
    """JSON-safe dict of `state` (for checkpoints)."""
    out = dataclasses.asdict(state)
    out["best_valid"] = dict(state.best_valid)
    out["best_test"] = dict(state.best_test)
    return out


def state_from_dict(raw: Mapping[str, Any]) -> EarlyStopping:
    """Inverse of `state_to_dict`; ValueError naming unknown or missing fields."""
    fields = {f.name for f in dataclasses.fields(EarlyStopping)}
    unknown, missing = set(raw) - fields, fields - set(raw)
    if unknown or missing:
        raise ValueError(f"early-stopping state: unknown fields {sorted(unknown)}, missing "
                         f"fields {sorted(missing)}")
    protocol_spec(raw["protocol"])
    best_value = raw["best_value"]
    return EarlyStopping(
        protocol=str(raw["protocol"]), metric=str(raw["metric"]),
        best_value=None if best_value is None else float(best_value),
        best_epoch=int(raw["best_epoch"]), evals_since_best=int(raw["evals_since_best"]),
        n_evals=int(raw["n_evals"]),
        best_valid={str(k): float(v) for k, v in raw["best_valid"].items()},
        best_test={str(k): float(v) for k, v in raw["best_test"].items()})
