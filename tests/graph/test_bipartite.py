import jax.numpy as jnp
import numpy as np

from recgoat_jax.graph.bipartite import lightgcn_propagate, normalized_user_item_graph


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
