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


def test_reference_contrastive_over_gathered_rows_matches_golden(golden):
    """The model's path: tables and batch ids, each distinct row computed once."""
    u, p, n = golden["batch_users"], golden["batch_pos"], golden["batch_neg"]
    G = losses.Gathered  # noqa: N806
    zu, zf = golden["out/z_user"], golden["out/z_item_fused"]
    cf, zt, zi = golden["out/z_item_cf"], golden["out/z_item_text"], golden["out/z_item_image"]
    assert len(np.unique(p)) < len(p)  # the golden batch repeats items: dedup is exercised
    cl = losses.reference_contrastive(
        G(zu, u), G(zf, p), (G(cf, p), G(cf, n)),
        {"text": (G(zt, p), G(zt, n)), "image": (G(zi, p), G(zi, n))},
        0.5, float(golden["temperature"]), jnp.ones(len(u), bool))
    np.testing.assert_allclose(cl, golden["loss/cl"], rtol=1e-5)


@pytest.mark.parametrize("sizes", [(5, 7), (5, 300), (300, 300)])
@pytest.mark.parametrize("block", [0, 4])
def test_gathered_infonce_equals_infonce_of_the_rows(sizes, block):
    """Deduplicated logits (one per distinct id pair, columns weighted by their valid count)
    give infonce's value and table gradients; masked rows count neither as anchors nor as
    negatives. (300, 300): both tables larger than the batch, the plain path."""
    rng = np.random.default_rng(5)
    batch = 40
    table_a = jnp.asarray(rng.normal(size=(sizes[0], 6)), jnp.float32)
    table_b = jnp.asarray(rng.normal(size=(sizes[1], 6)), jnp.float32)
    ids_a = jnp.asarray(rng.integers(0, sizes[0], batch))
    ids_b = jnp.asarray(rng.integers(0, sizes[1], batch))
    mask = jnp.arange(batch) < 33

    def rows_loss(ta, tb):
        return losses.infonce(ta[ids_a], tb[ids_b], 0.2, mask, block)

    def gathered_loss(ta, tb):
        return losses.infonce_gathered(losses.Gathered(ta, ids_a), losses.Gathered(tb, ids_b),
                                       0.2, mask, block)

    want, want_grads = jax.value_and_grad(rows_loss, (0, 1))(table_a, table_b)
    got, got_grads = jax.jit(jax.value_and_grad(gathered_loss, (0, 1)))(table_a, table_b)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for g, w in zip(got_grads, want_grads):
        scale = float(jnp.max(jnp.abs(w)))
        np.testing.assert_allclose(g / scale, w / scale, atol=1e-5)
    # an id held only by masked rows gets no gradient
    only_masked = set(np.asarray(ids_b[33:])) - set(np.asarray(ids_b[:33]))
    for i in only_masked:
        np.testing.assert_array_equal(got_grads[1][i], 0.0)


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


def test_cmcl_over_gathered_rows_matches_the_papers_formula():
    """Tables smaller than the batch, so rows repeat and the deduplicated path runs."""
    rng = np.random.default_rng(6)
    n, keep = 30, 26
    users = rng.integers(0, 8, n)
    items = rng.integers(0, 6, n)
    tu, tf, tt = rng.normal(size=(3, 8, 5)).astype(np.float32)
    G = losses.Gathered  # noqa: N806
    got = losses.cmcl(G(jnp.asarray(tu), jnp.asarray(users)),
                      G(jnp.asarray(tf[:6]), jnp.asarray(items)),
                      {"text": G(jnp.asarray(tt[:6]), jnp.asarray(items))},
                      0.3, 0.2, jnp.asarray(np.arange(n) < keep))
    want = np_cmcl(tu[users[:keep]], tf[items[:keep]], {"text": tt[items[:keep]]}, 0.3, 0.2)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_gathered_infonce_splits_its_distinct_rows_over_the_data_axis():
    """Traced under a 4-device data mesh (as the Trainer does), the distinct anchor rows are
    split over the devices: the same value and gradients as one device, and each device
    computes about a quarter of the logits instead of all of them (XLA's cost analysis)."""
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=jax.devices()[:4])
    rng = np.random.default_rng(7)
    batch, d = 256, 16
    ta, tb = (jnp.asarray(rng.normal(size=(n, d)), jnp.float32) for n in (90, 70))
    ia, ib = jnp.asarray(rng.integers(0, 90, batch)), jnp.asarray(rng.integers(0, 70, batch))
    mask = jnp.arange(batch) < 250

    def grads(ta, tb, ia, ib, mask):
        return jax.value_and_grad(lambda ta, tb: losses.infonce_gathered(
            losses.Gathered(ta, ia), losses.Gathered(tb, ib), 0.2, mask), (0, 1))(ta, tb)

    def under_mesh(*args):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return grads(*args)

    rep, rows = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))
    shardings = dict(in_shardings=(rep, rep, rows, rows, rows))
    args = (ta, tb, ia, ib, mask)
    want_value, want = jax.jit(grads)(*args)
    got_value, got = jax.jit(under_mesh, **shardings)(*args)
    np.testing.assert_allclose(got_value, want_value, rtol=1e-5)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-5 * float(jnp.max(jnp.abs(w))))

    def flops(fn):
        cost = jax.jit(fn, **shardings).lower(*args).compile().cost_analysis()
        return (cost[0] if isinstance(cost, list) else cost)["flops"]

    assert flops(under_mesh) < 0.5 * flops(grads)
