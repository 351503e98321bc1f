"""Small flax layers shared by graph/ and models/.

Dropout whose rate may be a traced value: a sweep member's own rate (`recgoat_jax.sweep`).

`Dropout` computes exactly what `flax.linen.Dropout` does (the same Bernoulli mask from the
same key: its auto-name is also "Dropout_<n>", so `make_rng` folds in the same module path),
but it never branches on the rate in Python unless the rate is a plain number.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class Dropout(nn.Module):
    """Zero each entry with probability `rate` (a float or a scalar array) and scale the rest
    by 1 / (1 - rate); identity when `deterministic` or when `rate` is the number 0."""

    rate: Any

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        if deterministic or (isinstance(self.rate, (int, float)) and self.rate == 0.0):
            return x
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(self.make_rng("dropout"), p=keep, shape=x.shape)
        return jax.lax.select(mask, x / keep, jnp.zeros_like(x))
