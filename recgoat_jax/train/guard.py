"""Stop a run whose loss or transport plan stopped being finite, saying what to change."""

from __future__ import annotations

import math

HINTS = {
    "bpr": "lower train.lr, or check the input features for extreme values",
    "reg": "lower train.lr or loss.decay",
    "cl": "raise loss.temperature or lower loss.cl_weight",
    "ot": "raise loss.ot_epsilon or lower loss.ot_weight",
    "plan": "use model.oat.solver='ott' (log domain) or raise model.oat.epsilon",
}


class TrainingDiverged(RuntimeError):
    """Raised by the training loop when an epoch produced NaN or Inf."""


def check_epoch(epoch: int, stats: dict, last_checkpoint: str | None = None) -> None:
    """Raise TrainingDiverged naming the epoch, the first non-finite term and the setting to change."""
    if bool(stats.get("finite", True)) and all(
            math.isfinite(float(v)) for k, v in stats.items() if k != "finite"):
        return
    bad = [k for k, v in stats.items() if k not in ("finite", "loss") and not math.isfinite(float(v))]
    term = bad[0] if bad else "loss"
    hint_key = "plan" if term.startswith("plan_") else term
    msg = (f"epoch {epoch}: the loss term '{term}' became NaN/Inf "
           f"(non-finite terms: {bad or ['loss']}). Try: {HINTS.get(hint_key, 'lower train.lr')}.")
    if last_checkpoint:
        msg += f" The last good checkpoint is {last_checkpoint}."
    raise TrainingDiverged(msg)
