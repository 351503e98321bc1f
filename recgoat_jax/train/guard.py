"""Stop a run whose loss or transport plan stopped being finite, and warn about a transport
plan that left its marginals; each message says what to change."""

from __future__ import annotations

import math
import re

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


# A plan whose row or column sums are off their targets by more than this share is no longer
# a transport plan: at float32 a log-domain solve breaks down once the cost spans ~1e7 epsilon.
PLAN_MARGINAL_TOLERANCE = 0.1
_PLAN_ERROR = re.compile(r"^plan_(.+)_marginal_rel_error$")
PLAN_REMEDIES = {  # by model.oat.solver
    "reference": "model.oat.solver='ott' (the kernel-domain loop underflows, REFERENCE.md "
                 "section 7)",
    "ott": "model.oat.cost_norm='mean' (epsilon relative to the cost), more "
           "model.oat.iterations, or a larger model.oat.epsilon",
    "lowrank": "model.oat.cost_norm='mean' or more model.oat.iterations",  # epsilon unused
}


def plan_warning(epoch: int, stats: dict, solver: str = "ott",
                 tolerance: float = PLAN_MARGINAL_TOLERANCE) -> str | None:
    """One line naming each modality whose OAT plan is off its marginals by more than
    `tolerance` (relative, `plan_<m>_marginal_rel_error` of the epoch's stats) and the
    setting to change for `solver` (model.oat.solver), or None."""
    off = {m.group(1): float(v) for k, v in stats.items()
           if (m := _PLAN_ERROR.match(k)) and float(v) > tolerance}
    if not off:
        return None
    names = ", ".join(f"{m} {e:.3g}" for m, e in sorted(off.items()))
    remedy = PLAN_REMEDIES.get(solver, PLAN_REMEDIES["ott"])
    return (f"warning: epoch {epoch}: the OAT plan is off its marginals (relative error "
            f"{names}; tolerance {tolerance:g}): Sinkhorn did not converge. Try {remedy} "
            f"(warned once).")
