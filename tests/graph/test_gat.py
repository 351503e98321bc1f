"""GATConv and ModalityBranch: a dense numpy masked-softmax GAT, the PyTorch reference's golden
branch outputs, initialisation statistics, dropout behaviour and gradients."""

import jax
import jax.numpy as jnp
import jraph
import numpy as np
import pytest

from recgoat_jax.graph.gat import FeatureTable, GATConv, ModalityBranch, segment_softmax
from recgoat_jax.graph.knn import knn_edges, with_self_loops
from recgoat_jax.graph.sparse import reverse_edges


def _random_graph(n_nodes: int, n_edges: int, seed: int):
    """Unique random edges plus one self-loop per node, sorted by receiver."""
    rng = np.random.default_rng(seed)
    keys = np.unique(rng.integers(0, n_nodes * n_nodes, n_edges))
    senders, receivers = keys % n_nodes, keys // n_nodes
    keep = senders != receivers
    return with_self_loops(senders[keep], receivers[keep], n_nodes)


def _dense_gat(h, kernel, attn_l, attn_r, bias, senders, receivers, slope=0.2):
    """GAT with a dense adjacency mask [dst, src] and a masked row softmax, per head."""
    n_nodes = h.shape[0]
    heads, head_dim = attn_l.shape
    mask = np.zeros((n_nodes, n_nodes), bool)
    mask[receivers, senders] = True
    f = (h.astype(np.float64) @ kernel).reshape(n_nodes, heads, head_dim)
    el = np.einsum("nhk,hk->nh", f, attn_l)  # source term
    er = np.einsum("nhk,hk->nh", f, attn_r)  # destination term
    out = np.zeros((n_nodes, heads, head_dim))
    for head in range(heads):
        e = er[:, head][:, None] + el[:, head][None, :]  # [dst, src]
        e = np.where(e > 0, e, slope * e)
        e = np.where(mask, e, -np.inf)
        a = np.exp(e - e.max(axis=1, keepdims=True))
        a /= a.sum(axis=1, keepdims=True)
        out[:, head] = a @ f[:, head]
    return out.reshape(n_nodes, heads * head_dim) + bias


def _branch_params(golden, prefix):
    p = lambda name: golden[f"param/{prefix}_branch.{name}"]  # noqa: E731
    return {
        "params": {
            "proj": {"kernel": p("proj.weight").T, "bias": p("proj.bias")},
            "gat_0": {
                "kernel": p("layers.0.fc.weight").T,
                "attn_l": p("layers.0.attn_l")[0],
                "attn_r": p("layers.0.attn_r")[0],
                "bias": p("layers.0.bias"),
            },
        }
    }


@pytest.mark.parametrize("dim, heads", [(16, 4), (12, 1)])
def test_gatconv_equals_dense_masked_softmax(dim, heads):
    n_nodes = 30
    senders, receivers = _random_graph(n_nodes, 150, seed=dim)
    rng = np.random.default_rng(1)
    h = rng.standard_normal((n_nodes, dim)).astype(np.float32)
    layer = GATConv(dim, heads)
    params = jax.jit(lambda key: layer.init(key, h, senders, receivers, True))(jax.random.key(0))["params"]
    # non-zero bias so that it is exercised
    params = {**params, "bias": jnp.asarray(rng.standard_normal(dim).astype(np.float32))}
    out = jax.jit(lambda p: layer.apply({"params": p}, h, senders, receivers, True))(params)
    p = jax.tree.map(np.asarray, params)
    expected = _dense_gat(h, p["kernel"], p["attn_l"], p["attn_r"], p["bias"], senders, receivers)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("modality, prefix", [("text", "txt"), ("image", "img")])
def test_branch_reproduces_golden(golden, modality, prefix):
    features = golden[f"{modality}_feat"]
    senders, receivers = knn_edges(features, int(golden["knn_k"]))
    senders, receivers = with_self_loops(senders, receivers, features.shape[0])
    branch = ModalityBranch(int(golden["dim"]))
    out = jax.jit(lambda p: branch.apply(p, features, senders, receivers, True))(_branch_params(golden, prefix))
    expected = golden[f"out/z_item_{modality}"]
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_param_names_shapes_and_init_statistics():
    dim, heads, in_dim = 1024, 8, 300
    x = np.zeros((3, in_dim), np.float32)
    senders, receivers = with_self_loops(np.zeros(0, np.int32), np.zeros(0, np.int32), 3)
    branch = ModalityBranch(dim, heads=heads)
    params = jax.jit(lambda key: branch.init(key, x, senders, receivers, True))(jax.random.key(3))["params"]
    shapes = jax.tree.map(np.shape, params)
    assert shapes == {
        "proj": {"kernel": (in_dim, dim), "bias": (dim,)},
        "gat_0": {"kernel": (dim, dim), "attn_l": (heads, dim // heads), "attn_r": (heads, dim // heads), "bias": (dim,)},
    }
    gat = params["gat_0"]
    # xavier-normal, gain sqrt(2): fc [d, d]; attn as torch's [1, H, d/H] (fan_in d, fan_out d/H)
    np.testing.assert_allclose(np.std(gat["kernel"]), np.sqrt(2) * np.sqrt(2 / (2 * dim)), rtol=0.02)
    for name in ("attn_l", "attn_r"):
        np.testing.assert_allclose(np.std(gat[name]), np.sqrt(2) * np.sqrt(2 / (dim + dim // heads)), rtol=0.1)
    assert not np.allclose(gat["attn_l"], gat["attn_r"])
    np.testing.assert_array_equal(gat["bias"], 0.0)
    # torch Linear default: weight and bias U(-1/sqrt(in), 1/sqrt(in))
    bound = 1 / np.sqrt(in_dim)
    for name in ("kernel", "bias"):
        values = np.abs(params["proj"][name])
        assert values.max() <= bound and values.max() > 0.95 * bound


def test_heads_must_divide_dim():
    h = np.zeros((2, 10), np.float32)
    with pytest.raises(ValueError, match="divisible"):
        GATConv(10, 4).init(jax.random.key(0), h, np.array([0, 1]), np.array([0, 1]), True)


@pytest.fixture(scope="module")
def branch_setup():
    rng = np.random.default_rng(5)
    n_items, in_dim, dim = 40, 12, 16
    x = rng.standard_normal((n_items, in_dim)).astype(np.float32)
    senders, receivers = with_self_loops(*knn_edges(x, 4), n_items)
    branch = ModalityBranch(dim)
    params = jax.jit(lambda key: branch.init(key, x, senders, receivers, True))(jax.random.key(0))
    return x, senders, receivers, dim, params


def _jitted_branch(branch, params, x, senders, receivers):
    """(dropout key, deterministic) -> z [I, d], compiled once per deterministic value."""
    return jax.jit(
        lambda key, deterministic: branch.apply(params, x, senders, receivers, deterministic, rngs={"dropout": key}),
        static_argnums=1,
    )


@pytest.mark.parametrize(
    "rates",
    [
        dict(feat_drop=0.1, attn_drop=0.0, dropout=0.0),
        dict(feat_drop=0.0, attn_drop=0.1, dropout=0.0),
        dict(feat_drop=0.0, attn_drop=0.0, dropout=0.1),
    ],
)
def test_each_dropout_acts_only_when_not_deterministic(branch_setup, rates):
    x, senders, receivers, dim, params = branch_setup
    run = _jitted_branch(ModalityBranch(dim, **rates), params, x, senders, receivers)
    clean = run(jax.random.key(1), True)
    np.testing.assert_array_equal(clean, run(jax.random.key(2), True))  # the rng is ignored
    noisy_a = run(jax.random.key(1), False)
    noisy_b = run(jax.random.key(2), False)
    assert not np.allclose(noisy_a, clean)
    assert not np.allclose(noisy_a, noisy_b)


def test_zero_rates_make_training_mode_deterministic(branch_setup):
    x, senders, receivers, dim, params = branch_setup
    run = _jitted_branch(ModalityBranch(dim, feat_drop=0.0, attn_drop=0.0, dropout=0.0), params, x, senders, receivers)
    np.testing.assert_allclose(run(jax.random.key(1), False), run(jax.random.key(1), True), rtol=1e-6)


def test_gradients_finite_and_reach_every_parameter(branch_setup):
    x, senders, receivers, dim, params = branch_setup
    branch = ModalityBranch(dim)

    def loss(p):
        out = branch.apply(p, x, senders, receivers, False, rngs={"dropout": jax.random.key(4)})
        return jnp.sum(out**2)

    grads = jax.jit(jax.grad(loss))(params)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.all(np.isfinite(g)), path
        assert np.any(g != 0), path


def test_segment_softmax_matches_jraph_values_and_gradients():
    rng = np.random.default_rng(2)
    segment_ids = jnp.asarray(np.sort(rng.integers(0, 9, 60)))
    logits = jnp.asarray(rng.standard_normal((60, 3)).astype(np.float32) * 5)
    weights = jnp.asarray(rng.standard_normal((60, 3)).astype(np.float32))
    ours = lambda lg: jnp.sum(segment_softmax(lg, segment_ids, 9) * weights)  # noqa: E731
    theirs = lambda lg: jnp.sum(  # noqa: E731
        jraph.segment_softmax(lg, segment_ids, 9, indices_are_sorted=True) * weights
    )
    probabilities = jax.jit(segment_softmax, static_argnums=2)(logits, segment_ids, 9)
    np.testing.assert_allclose(probabilities, jraph.segment_softmax(logits, segment_ids, 9), rtol=1e-6)
    np.testing.assert_allclose(
        jax.jit(jax.grad(ours))(logits), jax.jit(jax.grad(theirs))(logits), rtol=1e-5, atol=1e-6
    )
    sums = jax.ops.segment_sum(probabilities, segment_ids, 9)
    present = np.unique(np.asarray(segment_ids))
    np.testing.assert_allclose(np.asarray(sums)[present], 1.0, rtol=1e-6)


@pytest.mark.parametrize("dim, heads, loops", [
    (16, 4, 1), pytest.param(64, 8, 1, marks=pytest.mark.slow), (16, 4, 2)])
def test_csr_aggregation_equals_segment_sum_in_values_and_gradients(branch_setup, dim, heads,
                                                                     loops):
    """The CSR attention aggregation (reverse edges given) equals the gather + segment-sum
    layer differentiated by autodiff: outputs and every gradient within 1e-5, with dropout on
    (same key, so the same masks). loops = 2: every node has two self-loops, as a node that is
    its own kNN neighbour has after DGL's add_self_loop (its copies get different masks)."""
    x, senders, receivers, _, _ = branch_setup
    if loops == 2:
        senders, receivers = with_self_loops(senders, receivers, x.shape[0])
    reverse = reverse_edges(senders, receivers)
    branch = ModalityBranch(dim, heads=heads)
    params = branch.init(jax.random.key(3), x, senders, receivers, True)
    r = jax.random.normal(jax.random.key(5), (x.shape[0], dim))

    def loss(p, x, *graph):
        out = branch.apply(p, x, senders, receivers, False, *graph,
                           rngs={"dropout": jax.random.key(6)})
        return jnp.sum(jnp.tanh(out) * r)

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    want_value, want = grad(params, x)
    got_value, got = grad(params, x, reverse)
    np.testing.assert_allclose(got_value, want_value, rtol=1e-5)
    for (path, w), g in zip(jax.tree_util.tree_leaves_with_path(want), jax.tree.leaves(got)):
        scale = np.max(np.abs(w))
        assert scale > 0, path
        np.testing.assert_allclose(g / scale, w / scale, atol=1e-5, err_msg=str(path))


def test_projection_from_a_feature_table_equals_the_dense_layer(branch_setup):
    """Features given with their stored transpose (`FeatureTable`, the CPU layout) give the
    same branch output and the same parameter gradients as the plain array (nn.Dense-like
    autodiff), within 1e-5; the parameters are the same tree."""
    x, senders, receivers, dim, params = branch_setup
    table = FeatureTable(jnp.asarray(x), jnp.asarray(np.ascontiguousarray(x.T)))
    branch = ModalityBranch(dim)
    r = jax.random.normal(jax.random.key(8), (x.shape[0], dim))

    def loss(p, features):
        out = branch.apply(p, features, senders, receivers, False,
                           rngs={"dropout": jax.random.key(9)})
        return jnp.sum(jnp.tanh(out) * r)

    grad = jax.jit(jax.value_and_grad(loss))
    want_value, want = grad(params, jnp.asarray(x))
    got_value, got = grad(params, table)
    np.testing.assert_allclose(got_value, want_value, rtol=1e-5)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for (path, w), g in zip(jax.tree_util.tree_leaves_with_path(want), jax.tree.leaves(got)):
        scale = np.max(np.abs(w))
        np.testing.assert_allclose(g / scale, w / scale, atol=1e-5, err_msg=str(path))
    assert jax.tree.structure(branch.init(jax.random.key(0), table, senders, receivers, True)) \
        == jax.tree.structure(params)
