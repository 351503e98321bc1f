"""Optimal transport for RecGOAT: the OAT dimension-to-dimension plan and the OT loss.

  cost.py            feature_cost (closed form, O(d^2) memory), feature_cost_broadcast (reference)
  kernel_sinkhorn.py the reference's kernel-domain Sinkhorn, underflow included
  plan.py            PlanOptions (the solver's plain options), transport_plan (reference |
                     ott | lowrank solvers), plan_diagnostics, plan_targets, ott_output (the
                     solver's full output: iterations, convergence)

Nothing here reads the run configuration: `recgoat_jax.models.registry` translates `model.oat`
into `PlanOptions`; bad arguments raise ValueError.
  distribution.py    ot_loss: Sinkhorn divergence / entropic OT between batch point clouds
"""

from recgoat_jax.ot.cost import feature_cost, feature_cost_broadcast
from recgoat_jax.ot.distribution import ot_loss
from recgoat_jax.ot.kernel_sinkhorn import kernel_sinkhorn
from recgoat_jax.ot.plan import (PlanOptions, ott_output, plan_diagnostics, plan_targets,
                                 transport_plan)

__all__ = ["PlanOptions", "feature_cost", "feature_cost_broadcast", "kernel_sinkhorn", "ot_loss",
           "ott_output", "plan_diagnostics", "plan_targets", "transport_plan"]
