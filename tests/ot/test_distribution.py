"""Distribution-level OT loss between a modality's and the ID embeddings of a batch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recgoat_jax.ot import ot_loss
from tests.conftest import np_entropic_ot, np_sinkhorn_divergence

EPSILON = 0.05
loss_fn = jax.jit(ot_loss, static_argnames=("kind", "epsilon", "iterations", "cost"))
grad_fn = jax.jit(jax.grad(ot_loss, argnums=(0, 1)),
                  static_argnames=("kind", "epsilon", "iterations", "cost"))


def _unit_rows(a):
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def clouds():
    """Two different batches of 8 unit-norm points in 4-d, and padded copies with junk rows."""
    rng = np.random.default_rng(0)
    x = _unit_rows(rng.normal(size=(8, 4)))
    y = _unit_rows(rng.normal(size=(8, 4)) + 0.7)
    junk = rng.normal(size=(4, 4)).astype(np.float32) * 5
    mask = np.r_[np.ones(8, bool), np.zeros(4, bool)]
    return x, y, np.concatenate([x, junk]), np.concatenate([y, -junk]), mask


def test_divergence_is_zero_for_identical_clouds_and_positive_otherwise(clouds):
    x, y, *_ = clouds
    same = float(loss_fn(x, x, kind="sinkhorn_divergence", epsilon=EPSILON))
    assert abs(same) < 1e-5
    # a permutation of the same points is the same distribution
    assert abs(float(loss_fn(x, x[::-1], kind="sinkhorn_divergence", epsilon=EPSILON))) < 1e-5
    different = float(loss_fn(x, y, kind="sinkhorn_divergence", epsilon=EPSILON))
    assert different > 1e-2
    # moving y further away costs more
    farther = float(loss_fn(x, y + 0.5, kind="sinkhorn_divergence", epsilon=EPSILON))
    assert farther > different


def test_entropic_cost_is_larger_for_different_clouds(clouds):
    x, y, *_ = clouds
    same = float(loss_fn(x, x, kind="entropic", epsilon=EPSILON))
    different = float(loss_fn(x, y, kind="entropic", epsilon=EPSILON))
    assert np.isfinite(same) and different > same + 1e-2


@pytest.mark.parametrize("kind", ["sinkhorn_divergence", "entropic"])
def test_losses_match_a_float64_numpy_sinkhorn(clouds, kind):
    """ot_loss (float32, 50 iterations) against the converged float64 formula, padded rows
    left out of the numpy clouds; 1e-3: float32 rounding and the unfinished iterations."""
    x, y, x_pad, y_pad, mask = clouds
    eps = 0.2  # at 0.05 Sinkhorn needs ~1e5 steps on these clouds to converge in float64
    want = (np_sinkhorn_divergence if kind == "sinkhorn_divergence" else np_entropic_ot)(
        x, y, eps)
    got = float(loss_fn(x_pad, y_pad, mask=jnp.asarray(mask), kind=kind, epsilon=eps))
    np.testing.assert_allclose(got, want, rtol=1e-3)


@pytest.mark.parametrize("kind", ["sinkhorn_divergence", "entropic"])
def test_masked_rows_change_neither_loss_nor_gradient(clouds, kind):
    x, y, x_pad, y_pad, mask = clouds
    plain = float(loss_fn(x, y, kind=kind, epsilon=EPSILON))
    padded = float(loss_fn(x_pad, y_pad, mask=jnp.asarray(mask), kind=kind, epsilon=EPSILON))
    np.testing.assert_allclose(padded, plain, rtol=1e-4, atol=1e-6)
    gx_pad, gy_pad = grad_fn(x_pad, y_pad, mask=jnp.asarray(mask), kind=kind, epsilon=EPSILON)
    gx, gy = grad_fn(x, y, kind=kind, epsilon=EPSILON)
    assert np.all(np.isfinite(gx_pad)) and np.all(np.isfinite(gy_pad))
    assert np.all(gx_pad[8:] == 0) and np.all(gy_pad[8:] == 0)
    np.testing.assert_allclose(gx_pad[:8], gx, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(gy_pad[:8], gy, rtol=1e-3, atol=1e-5)


def test_gradient_descent_on_the_divergence_moves_the_clouds_together(clouds):
    x, y, *_ = clouds
    loss = lambda a: loss_fn(a, y, kind="sinkhorn_divergence", epsilon=EPSILON)
    gx, _ = grad_fn(x, y, kind="sinkhorn_divergence", epsilon=EPSILON)
    assert np.all(np.isfinite(gx)) and np.any(gx != 0)
    assert float(loss(x - 0.5 * gx)) < float(loss(x))


def test_euclidean_ground_cost_has_finite_gradient_at_coincident_points(clouds):
    x, *_ = clouds
    gx, gy = grad_fn(x, x, kind="sinkhorn_divergence", epsilon=EPSILON, cost="euclidean")
    assert np.all(np.isfinite(gx)) and np.all(np.isfinite(gy))


def test_bad_arguments_are_rejected(clouds):
    x, y, *_ = clouds
    with pytest.raises(ValueError, match="kind must be one of"):
        ot_loss(x, y, kind="wasserstein", epsilon=EPSILON)
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        ot_loss(x, y, kind="entropic", epsilon=0.0)
    with pytest.raises(ValueError, match=r"\[B, d\]"):
        ot_loss(x, y[:5], kind="entropic", epsilon=EPSILON)
    with pytest.raises(ValueError, match="mask"):
        ot_loss(x, y, kind="entropic", epsilon=EPSILON, mask=jnp.ones(3, bool))
