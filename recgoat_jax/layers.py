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
import numpy as np


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

    def rng(self) -> jax.Array:
        """The key `__call__` would draw its mask from (the same module path and count), for
        callers that draw the mask themselves (`bernoulli_at`: a block of a larger mask)."""
        return self.make_rng("dropout")


def bernoulli_at(key: jax.Array, keep, counters: jax.Array) -> jax.Array:
    """Entries `counters` of ``jax.random.bernoulli(key, keep, shape).ravel()``, without the rest.

    counters: uint32 flat indices (any shape; the full mask must have under 2^32 entries).
    Under ``jax_threefry_partitionable`` (jax's default) entry c of a mask is the threefry hash
    of (key, c) alone, so a device can draw the entries of the rows it holds, even when they
    are not a contiguous block (the edges of a partitioned graph): the mask a partitioned
    model uses is then the one the whole model uses (tests/test_layers.py checks this against
    `jax.random.bernoulli`).
    """
    from jax.extend.random import threefry2x32_p

    if not jax.config.jax_threefry_partitionable:
        raise ValueError("bernoulli_at reproduces jax.random.bernoulli only with "
                         "jax_threefry_partitionable = True (jax's default)")
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    counters = counters.astype(jnp.uint32)
    bits1, bits2 = threefry2x32_p.bind(key[0], key[1], jnp.zeros_like(counters), counters)
    # jax.random.uniform's float32 from 32 random bits: 23 mantissa bits in [1, 2), minus 1
    mantissa = jax.lax.shift_right_logical(bits1 ^ bits2, jnp.uint32(32 - 23))
    one = jnp.uint32(np.float32(1.0).view(np.uint32))
    uniform = jax.lax.bitcast_convert_type(mantissa | one, jnp.float32) - jnp.float32(1.0)
    return uniform < keep
