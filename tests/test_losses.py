import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recgoat_jax import losses


def np_infonce(a, b, tau):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    logits = a @ b.T / tau
    m = logits.max(1, keepdims=True)
    lse = np.log(np.exp(logits - m).sum(1)) + m[:, 0]
    return float(np.mean(lse - np.diag(logits)))


@pytest.mark.parametrize("block", [0, 7, 64])
def test_infonce_matches_numpy_and_blocks_agree(block):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 50, 8)).astype(np.float32)
    mask = jnp.ones(50, bool)
    got = losses.infonce(jnp.asarray(a), jnp.asarray(b), 0.2, mask, block)
    np.testing.assert_allclose(got, np_infonce(a, b, 0.2), rtol=1e-5)


@pytest.mark.parametrize("block", [8, 16, 32])
def test_blocked_infonce_values_and_gradients_equal_full(block):
    """The blocked custom VJP (row pass for a, transposed column pass for b, padded last
    block) equals autodiff of the unblocked loss within 1e-5 of the gradient scale."""
    rng = np.random.default_rng(1)
    a, b = (jnp.asarray(x) for x in rng.normal(size=(2, 33, 6)).astype(np.float32))
    mask = jnp.arange(33) < 30

    def loss(block):
        return jax.jit(jax.value_and_grad(
            lambda a, b: losses.infonce(a, b, 0.2, mask, block), (0, 1)))

    full_value, full = loss(0)(a, b)
    blocked_value, blocked = loss(block)(a, b)
    np.testing.assert_allclose(blocked_value, full_value, rtol=1e-6)
    for f, g in zip(full, blocked):
        scale = float(jnp.max(jnp.abs(f)))
        np.testing.assert_allclose(g / scale, f / scale, atol=1e-5)
    # masked rows are neither anchors nor negatives: no gradient reaches them
    np.testing.assert_array_equal(blocked[0][30:], 0.0)
    np.testing.assert_array_equal(blocked[1][30:], 0.0)


def test_masked_rows_are_neither_anchors_nor_negatives():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(2, 20, 4)).astype(np.float32)
    mask = np.arange(20) < 13
    garbage_a, garbage_b = a.copy(), b.copy()
    garbage_a[13:] = 1e3 * rng.normal(size=(7, 4))
    garbage_b[13:] = -1e3 * rng.normal(size=(7, 4))
    got = losses.infonce(jnp.asarray(garbage_a), jnp.asarray(garbage_b), 0.2, jnp.asarray(mask))
    np.testing.assert_allclose(got, np_infonce(a[:13], b[:13], 0.2), rtol=1e-5)
    bpr = losses.bpr(jnp.asarray([1.0, 2.0, 1e9]), jnp.asarray([0.0, 0.0, -1e9]),
                     jnp.asarray([True, True, False]))
    np.testing.assert_allclose(bpr, np.mean(np.log1p(np.exp([-1.0, -2.0]))), rtol=1e-6)


def test_reference_contrastive_matches_golden(golden):
    u, p, n = golden["batch_users"], golden["batch_pos"], golden["batch_neg"]
    zu, zf = golden["out/z_user"], golden["out/z_item_fused"]
    cf, zt, zi = golden["out/z_item_cf"], golden["out/z_item_text"], golden["out/z_item_image"]
    mask = jnp.ones(len(u), bool)
    cl = losses.reference_contrastive(
        zu[u], zf[p], (cf[p], cf[n]), {"text": (zt[p], zt[n]), "image": (zi[p], zi[n])},
        0.5, float(golden["temperature"]), mask)
    np.testing.assert_allclose(cl, golden["loss/cl"], rtol=1e-5)


def np_cmcl(z_user, fused, modal, w, tau):
    """The paper's CMCL (REFERENCE.md section 7, defect 4), row by row in float64:
    (1 - w) InfoNCE(user, fused) + w mean_m mean_i -log exp(<z^m_i, z_i>/tau) /
    sum_j exp(<z^m_i, z_j>/tau), every row L2-normalised, in-batch negatives."""
    def unit(x):
        x = np.asarray(x, np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def nce(anchors, targets):
        a, t = unit(anchors), unit(targets)
        terms = [-np.log(np.exp(a[i] @ t[i] / tau) / sum(np.exp(a[i] @ t[j] / tau)
                                                        for j in range(len(t))))
                 for i in range(len(a))]
        return np.mean(terms)

    modal_terms = [nce(z, fused) for z in modal.values()]
    return (1 - w) * nce(z_user, fused) + w * np.mean(modal_terms)


@pytest.mark.parametrize("block", [0, 8])
def test_cmcl_matches_the_papers_formula(block):
    rng = np.random.default_rng(4)
    n, keep = 24, 19
    zu, zf, zt, zi = rng.normal(size=(4, n, 6)).astype(np.float32)
    zi += 0.5 * zf  # modalities related to the fused rows, so the terms are not all alike
    mask = np.arange(n) < keep
    garbage = lambda x: np.where(mask[:, None], x, 1e3 * rng.normal(size=x.shape))  # noqa: E731
    got = losses.cmcl(*(jnp.asarray(garbage(x), jnp.float32) for x in (zu, zf)),
                      {"text": jnp.asarray(garbage(zt), jnp.float32),
                       "image": jnp.asarray(garbage(zi), jnp.float32)},
                      0.3, 0.2, jnp.asarray(mask), block)
    want = np_cmcl(zu[:keep], zf[:keep], {"text": zt[:keep], "image": zi[:keep]}, 0.3, 0.2)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    # without modalities only the user-item term is left (no (1 - w) factor)
    alone = losses.cmcl(jnp.asarray(zu), jnp.asarray(zf), {}, 0.3, 0.2, jnp.ones(n, bool))
    np.testing.assert_allclose(float(alone), np_cmcl(zu, zf, {"x": zf}, 0.0, 0.2), rtol=1e-5)
