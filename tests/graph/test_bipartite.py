import jax.numpy as jnp
import numpy as np

import jax

from recgoat_jax.graph.bipartite import (
    lightgcn_propagate,
    normalized_user_item_graph,
    propagate_segment_sum,
)


def dense_norm_adj(n_users, n_items, pairs):
    a = np.zeros((n_users + n_items,) * 2)
    for u, i in pairs:
        a[u, n_users + i] = a[n_users + i, u] = 1.0
    deg = a.sum(1)
    inv = np.where(deg > 0, 1 / np.sqrt(np.maximum(deg, 1e-30)), 0.0)
    return inv[:, None] * a * inv[None, :]


def test_graph_equals_dense_normalised_adjacency_with_duplicates_and_isolated_nodes():
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, [7, 9], size=(30, 2))
    pairs = np.concatenate([pairs, pairs[:5]])  # duplicates count once
    g = normalized_user_item_graph(8, 10, pairs)  # user 7 / item 9 may be isolated
    a = np.zeros((18, 18))
    a[g.receivers, g.senders] = g.edges
    np.testing.assert_allclose(a, dense_norm_adj(8, 10, set(map(tuple, pairs))), rtol=1e-6)
    assert np.all(np.diff(g.receivers) >= 0)


def test_lightgcn_is_mean_of_powers():
    rng = np.random.default_rng(1)
    pairs = rng.integers(0, [6, 5], size=(15, 2))
    g = normalized_user_item_graph(6, 5, pairs)
    a = dense_norm_adj(6, 5, set(map(tuple, pairs)))
    x = rng.normal(size=(11, 4)).astype(np.float32)
    want = (x + a @ x + a @ a @ x + a @ a @ a @ x) / 4
    np.testing.assert_allclose(lightgcn_propagate(g, jnp.asarray(x), 3), want, rtol=1e-5, atol=1e-6)


def test_golden_adjacency_and_lightgcn(golden):
    n_users, n_items = int(golden["n_users"]), int(golden["n_items"])
    g = normalized_user_item_graph(n_users, n_items,
                                   np.stack([golden["train_users"], golden["train_items"]], 1))
    got = np.zeros((n_users + n_items,) * 2)
    got[g.receivers, g.senders] = g.edges
    want = np.zeros_like(got)
    want[golden["adj_index"][0], golden["adj_index"][1]] = golden["adj_value"]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)
    x0 = np.concatenate([golden["param/cf.embedding_user.weight"],
                         golden["param/cf.embedding_item.weight"]])
    z = np.asarray(lightgcn_propagate(g, jnp.asarray(x0), 3))
    np.testing.assert_allclose(z[:n_users], golden["out/z_user"], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(z[n_users:], golden["out/z_item_cf"], rtol=1e-4, atol=1e-7)


def test_csr_propagation_equals_segment_sum_in_value_and_gradient():
    """The CSR product with its symmetric backward pass equals the gather + segment-sum
    formulation differentiated by autodiff (values and gradients within 1e-5)."""
    rng = np.random.default_rng(2)
    n_users, n_items = 40, 30
    pairs = rng.integers(0, [n_users, n_items], size=(300, 2))
    g = normalized_user_item_graph(n_users, n_items, pairs)
    x = jnp.asarray(rng.normal(size=(n_users + n_items, 8)).astype(np.float32))
    r = jnp.asarray(rng.normal(size=(n_users + n_items, 8)).astype(np.float32))

    def reference(x):
        total, y = x, x
        for _ in range(3):
            y = propagate_segment_sum(g, y)
            total = total + y
        return jnp.sum(jnp.tanh(total / 4) * r)

    def csr(x):
        return jnp.sum(jnp.tanh(lightgcn_propagate(g, x, 3)) * r)

    want_value, want_grad = jax.jit(jax.value_and_grad(reference))(x)
    got_value, got_grad = jax.jit(jax.value_and_grad(csr))(x)
    np.testing.assert_allclose(got_value, want_value, rtol=1e-5)
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-5, atol=1e-6)
    # a batch of tables (the vmapped sweep layout) gives the same rows
    xs = jnp.stack([x, 2 * x])
    batched = jax.vmap(lambda x: lightgcn_propagate(g, x, 2))(xs)
    np.testing.assert_allclose(batched[1], lightgcn_propagate(g, 2 * x, 2), rtol=1e-5, atol=1e-6)
    assert not np.allclose(batched[0], batched[1])
