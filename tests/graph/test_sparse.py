"""CSR products over receiver-sorted edge lists and the reverse-edge permutation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recgoat_jax.graph.sparse import (
    csr_matmul,
    reverse_edges,
    row_pointers,
    symmetric_csr_matmul,
)


def _symmetric_edges(n_nodes, n_pairs, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, n_nodes, (n_pairs, 2))
    a = a[a[:, 0] != a[:, 1]]
    keys = np.unique(np.concatenate([a[:, 0] * n_nodes + a[:, 1], a[:, 1] * n_nodes + a[:, 0]]))
    receivers, senders = np.divmod(keys, n_nodes)  # sorted by receiver
    return senders.astype(np.int32), receivers.astype(np.int32)


def test_csr_matmul_equals_dense_product_with_empty_rows():
    senders, receivers = _symmetric_edges(12, 15, 0)
    n = 14  # nodes 12 and 13 have no edges
    values = np.random.default_rng(1).normal(size=len(senders)).astype(np.float32)
    dense = np.zeros((n, n), np.float32)
    dense[receivers, senders] = values
    x = np.random.default_rng(2).normal(size=(n, 5)).astype(np.float32)
    indptr = row_pointers(jnp.asarray(receivers), n)
    assert indptr.shape == (n + 1,) and int(indptr[-1]) == len(senders)
    np.testing.assert_allclose(csr_matmul(jnp.asarray(values), jnp.asarray(senders), indptr, x),
                               dense @ x, rtol=1e-5, atol=1e-6)


def test_symmetric_product_gradient_equals_autodiff_of_the_dense_product():
    senders, receivers = _symmetric_edges(20, 40, 3)
    rev = reverse_edges(senders, receivers)
    rng = np.random.default_rng(4)
    half = rng.normal(size=len(senders)).astype(np.float32)
    values = (half + half[rev]) / 2  # symmetric values
    dense = np.zeros((20, 20), np.float32)
    dense[receivers, senders] = values
    np.testing.assert_allclose(dense, dense.T)
    x = jnp.asarray(rng.normal(size=(20, 3)).astype(np.float32))
    indptr = row_pointers(jnp.asarray(receivers), 20)

    def f(op):
        return lambda x: jnp.sum(jnp.sin(op(x)))

    got = jax.grad(f(lambda x: symmetric_csr_matmul(jnp.asarray(values), jnp.asarray(senders),
                                                    indptr, x)))(x)
    want = jax.grad(f(lambda x: jnp.asarray(dense) @ x))(x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_reverse_edges_maps_each_edge_to_its_reverse_and_rejects_asymmetric_sets():
    senders, receivers = _symmetric_edges(30, 60, 5)
    rev = reverse_edges(senders, receivers)
    np.testing.assert_array_equal(senders[rev], receivers)
    np.testing.assert_array_equal(receivers[rev], senders)
    with pytest.raises(ValueError, match="not symmetric"):
        reverse_edges(np.array([0, 1, 2]), np.array([1, 0, 0]))


def test_reverse_edges_pairs_the_copies_of_a_repeated_edge_one_to_one():
    # 0 -> 0 twice (a kNN self-edge plus the added self-loop), 0 <-> 1 twice, 1 -> 1 once
    senders = np.array([0, 0, 1, 1, 0, 0, 1])
    receivers = np.array([0, 0, 0, 0, 1, 1, 1])
    rev = reverse_edges(senders, receivers)
    assert sorted(rev.tolist()) == list(range(7))  # a permutation: no edge read twice
    np.testing.assert_array_equal(senders[rev], receivers)
    np.testing.assert_array_equal(receivers[rev], senders)
