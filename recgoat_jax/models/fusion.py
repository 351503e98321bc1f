"""OAT fusion: align each modality with the ID embeddings through a feature-transport plan.

For modality m: C_m = cost over embedding dimensions [d, d]; T_m = transport plan; aligned_m =
z_m @ (T_m + Delta_m); z = w_cf z_cf + sum_m w_m aligned_m; then LayerNorm, dropout, L2-normalise
rows (REFERENCE.md section 3, step 3).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from recgoat_jax.config import OATConfig
from recgoat_jax.losses import l2_normalize
from recgoat_jax.ot.cost import feature_cost
from recgoat_jax.ot.plan import transport_plan


def initial_weight(cfg: OATConfig, modality: str) -> float:
    """The reference's alpha (image) and beta (text); other modalities get cfg.other_weight."""
    return {"image": cfg.alpha_image, "text": cfg.beta_text}.get(modality, cfg.other_weight)


class OATFusion(nn.Module):
    """Parameters: ``delta_<m>`` [d, d] (xavier-uniform), ``weight_<m>`` [] (the reference's
    alpha / beta), ``ln`` (LayerNorm scale / bias [d]). `dtype`: operand dtype of the
    ``z_m @ (T_m + Delta_m)`` matmuls (bf16 for mixed precision); the cost, the plan and the
    results stay float32."""

    modalities: tuple[str, ...]
    cfg: OATConfig
    dropout: float = 0.1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z_cf: jax.Array, z_modal: dict[str, jax.Array], deterministic: bool):
        """z_cf: [I, d]; z_modal[m]: [I, d] -> (z_fused [I, d], {m: plan [d, d]})."""
        d = z_cf.shape[-1]
        plans, aligned = {}, {}
        for m in self.modalities:
            plan = transport_plan(feature_cost(z_modal[m], z_cf, self.cfg.cost_scale), self.cfg)
            plans[m] = plan
            mapping = plan
            if self.cfg.use_delta:
                mapping = mapping + self.param(f"delta_{m}", nn.initializers.xavier_uniform(),
                                               (d, d), jnp.float32)
            aligned[m] = jnp.matmul(z_modal[m].astype(self.dtype), mapping.astype(self.dtype),
                                    preferred_element_type=jnp.float32)
        raw = jnp.stack([jnp.asarray(self.param(f"weight_{m}", nn.initializers.constant(
            self._init_param(m)), (), jnp.float32)) for m in self.modalities])
        if self.cfg.fusion_weights == "unconstrained":
            w_modal, w_cf = raw, 1.0 - jnp.sum(raw)
        elif self.cfg.fusion_weights == "softmax":
            w = jax.nn.softmax(jnp.concatenate([jnp.zeros((1,)), raw]))
            w_cf, w_modal = w[0], w[1:]
        else:
            raise ValueError("model.oat.fusion_weights must be 'unconstrained' or 'softmax', "
                             f"got {self.cfg.fusion_weights!r}")
        z = w_cf * z_cf + sum(w_modal[k] * aligned[m] for k, m in enumerate(self.modalities))
        z = nn.LayerNorm(epsilon=1e-5, name="ln")(z)
        z = nn.Dropout(self.dropout)(z, deterministic=deterministic)
        return l2_normalize(z), plans

    def _init_param(self, m: str) -> float:
        w = initial_weight(self.cfg, m)
        if self.cfg.fusion_weights == "softmax":
            # logits relative to the ID embedding's 0, so that softmax starts at the same weights
            w_cf = max(1.0 - sum(initial_weight(self.cfg, n) for n in self.modalities), 1e-3)
            return float(jnp.log(w / w_cf))
        return w
