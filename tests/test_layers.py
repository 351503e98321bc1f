"""layers.Dropout: the masks of flax's nn.Dropout (same key, same module path), and a rate
that may be a traced value (a sweep member's own)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recgoat_jax.layers import Dropout, bernoulli_at


class Twice(nn.Module):
    cls: type
    rate: float

    @nn.compact
    def __call__(self, x, deterministic):
        return self.cls(self.rate)(self.cls(self.rate)(x, deterministic=deterministic),
                                   deterministic=deterministic)


def test_equals_flax_dropout_and_takes_a_traced_rate():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((64, 16)), jnp.float32)
    rngs = {"dropout": jax.random.PRNGKey(3)}
    ours = Twice(Dropout, 0.3).apply({}, x, False, rngs=rngs)
    flax = Twice(nn.Dropout, 0.3).apply({}, x, False, rngs=rngs)
    np.testing.assert_array_equal(ours, flax)
    assert 0.2 < float(jnp.mean(ours == 0)) < 0.7  # two layers of 30%
    np.testing.assert_array_equal(Twice(Dropout, 0.3).apply({}, x, True, rngs=rngs), x)
    np.testing.assert_array_equal(Twice(Dropout, 0.0).apply({}, x, False, rngs=rngs), x)

    def with_rate(rate):
        return Twice(Dropout, rate).apply({}, x, False, rngs=rngs)

    traced = jax.jit(jax.vmap(with_rate))(jnp.asarray([0.3, 0.0], jnp.float32))
    np.testing.assert_allclose(traced[0], ours, rtol=1e-6)
    np.testing.assert_allclose(traced[1], x, rtol=1e-6)  # rate 0: every entry kept, scale 1


@pytest.mark.parametrize("make_key", [jax.random.PRNGKey, jax.random.key])
def test_bernoulli_at_draws_the_entries_of_jax_random_bernoulli(make_key):
    key = make_key(7)
    want = np.asarray(jax.random.bernoulli(key, 0.9, (50, 8))).ravel()
    counters = np.random.default_rng(0).permutation(400)[:123].astype(np.uint32)
    got = jax.jit(bernoulli_at)(key, jnp.float32(0.9), jnp.asarray(counters))
    np.testing.assert_array_equal(got, want[counters])
    assert 0 < np.mean(want) < 1
