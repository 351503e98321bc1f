"""OAT fusion: align each modality with the ID embeddings through a feature-transport plan.

For modality m: C_m = cost over embedding dimensions [d, d]; T_m = transport plan; aligned_m =
z_m @ (T_m + Delta_m); z = w_cf z_cf + sum_m w_m aligned_m; then LayerNorm, dropout, L2-normalise
rows (REFERENCE.md section 3, step 3).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from recgoat_jax.layers import Dropout
from recgoat_jax.losses import l2_normalize
from recgoat_jax.ot.cost import feature_cost
from recgoat_jax.ot.plan import PlanOptions, transport_plan

WEIGHTINGS = ("unconstrained", "softmax")


@dataclasses.dataclass(frozen=True)
class FusionOptions:
    """The fusion's plain options.

    plan: how the transport plan is solved; cost_scale: multiplies the dimension cost (the
    reference: 100); use_delta: learn the residual map Delta_m; weights: "unconstrained" (the
    reference: w_m free, w_cf = 1 - sum w_m) or "softmax" (w_cf and the w_m a softmax of logits,
    the ID embedding's logit fixed at 0); initial_weights: the starting w_m, one per modality in
    the fusion's order.
    """

    plan: PlanOptions
    cost_scale: float
    use_delta: bool
    weights: str
    initial_weights: tuple[float, ...]

    def __post_init__(self):
        if self.weights not in WEIGHTINGS:
            raise ValueError(f"fusion weights must be one of {WEIGHTINGS}, got {self.weights!r}")
        if not self.cost_scale > 0:
            raise ValueError(f"cost_scale must be > 0, got {self.cost_scale!r}")


def mix_weights(raw: jax.Array, weights: str) -> tuple[jax.Array, jax.Array]:
    """(w_cf [], w_modal [M]): the weights the fusion applies, from its raw parameters [M]
    (the ``weight_<m>`` of each modality, in order) and `FusionOptions.weights`."""
    if weights == "unconstrained":
        return 1.0 - jnp.sum(raw), raw
    if weights == "softmax":
        w = jax.nn.softmax(jnp.concatenate([jnp.zeros((1,)), raw]))
        return w[0], w[1:]
    raise ValueError(f"fusion weights must be one of {WEIGHTINGS}, got {weights!r}")


def initial_params(initial_weights, weights: str, xp=jnp) -> jax.Array:
    """The raw ``weight_<m>`` parameters [M] that start the fusion at `initial_weights` (one
    per modality; jax arrays allowed, or `xp=numpy` for plain numbers while a module is being
    traced). "softmax": logits relative to the ID embedding's 0, so the softmax starts at the
    same weights."""
    w = xp.stack([xp.asarray(x, xp.float32) for x in initial_weights])
    if weights == "softmax":
        w_cf = xp.maximum(1.0 - xp.sum(w), xp.float32(1e-3))
        return xp.log(w / w_cf)
    return w


class OATFusion(nn.Module):
    """Parameters: ``delta_<m>`` [d, d] (xavier-uniform), ``weight_<m>`` [] (the reference's
    alpha / beta), ``ln`` (LayerNorm scale / bias [d]). `dtype`: operand dtype of the
    ``z_m @ (T_m + Delta_m)`` matmuls (bf16 for mixed precision); the cost, the plan and the
    results stay float32."""

    modalities: tuple[str, ...]
    options: FusionOptions
    dropout: float = 0.1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z_cf: jax.Array, z_modal: dict[str, jax.Array], deterministic: bool,
                 mask: jax.Array | None = None):
        """z_cf: [I, d]; z_modal[m]: [I, d] -> (z_fused [I, d], {m: plan [d, d]}).
        mask: [I] bool, False on padding rows, which the cost then leaves out."""
        o = self.options
        if len(o.initial_weights) != len(self.modalities):
            raise ValueError(f"OATFusion: {len(o.initial_weights)} initial weights for the "
                             f"{len(self.modalities)} modalities {self.modalities}")
        d = z_cf.shape[-1]
        plans, aligned = {}, {}
        for m in self.modalities:
            plan = transport_plan(feature_cost(z_modal[m], z_cf, o.cost_scale, mask), o.plan)
            plans[m] = plan
            mapping = plan
            if o.use_delta:
                mapping = mapping + self.param(f"delta_{m}", nn.initializers.xavier_uniform(),
                                               (d, d), jnp.float32)
            aligned[m] = jnp.matmul(z_modal[m].astype(self.dtype), mapping.astype(self.dtype),
                                    preferred_element_type=jnp.float32)
        raw = jnp.stack([jnp.asarray(self.param(f"weight_{m}", nn.initializers.constant(
            self._init_param(k)), (), jnp.float32)) for k, m in enumerate(self.modalities)])
        w_cf, w_modal = mix_weights(raw, o.weights)
        z = w_cf * z_cf + sum(w_modal[k] * aligned[m] for k, m in enumerate(self.modalities))
        z = nn.LayerNorm(epsilon=1e-5, name="ln")(z)
        z = Dropout(self.dropout)(z, deterministic=deterministic)
        return l2_normalize(z), plans

    def _init_param(self, k: int) -> float:
        return float(initial_params(self.options.initial_weights, self.options.weights, np)[k])
