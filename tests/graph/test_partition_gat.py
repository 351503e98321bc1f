"""Graph attention on a row-partitioned kNN graph: each device's block holds exactly the edges
into its rows, and a modality branch over 2, 4 and 8 (forced CPU) devices equals the
unpartitioned branch in value and gradient, attention dropout included (the same masks)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recgoat_jax.graph.gat import ModalityBranch
from recgoat_jax.graph.knn import knn_edges, with_self_loops
from recgoat_jax.graph.partition_gat import partition_edges
from recgoat_jax.train.parallel import make_mesh, place, rows


@pytest.fixture(scope="module")
def knn():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((37, 12)).astype(np.float32)  # 37 rows: every split pads
    senders, receivers = with_self_loops(*knn_edges(x, 5), 37)
    return x, senders, receivers


def test_each_block_holds_the_edges_into_its_rows(knn):
    _, senders, receivers = knn
    blocks = partition_edges(senders, receivers, rows_per_part=10, n_parts=4)
    got = set()
    for k in range(4):
        real = blocks.receivers[k] < 10
        assert np.all(blocks.receivers[k][~real] == 10)  # padding points past the block
        edges = blocks.edge_ids[k][real]
        np.testing.assert_array_equal(senders[edges], blocks.senders[k][real])
        np.testing.assert_array_equal(receivers[edges], blocks.receivers[k][real] + 10 * k)
        got.update(edges.tolist())
    assert got == set(range(len(senders)))
    with pytest.raises(ValueError, match="sorted by receiver"):
        partition_edges(senders[::-1], receivers[::-1], 10, 4)


@pytest.mark.parametrize("n_devices", [2, 4, 8])
def test_partitioned_branch_equals_the_whole_branch_with_dropout(knn, n_devices):
    x, senders, receivers = knn
    n, dim = x.shape[0], 16
    per_part = -(-n // n_devices)
    padded = np.pad(x, [(0, n_devices * per_part - n), (0, 0)])
    mesh = make_mesh(n_devices)
    whole = ModalityBranch(dim, heads=4, feat_drop=0.2, attn_drop=0.3, dropout=0.1)
    split = whole.clone(mesh=mesh)
    params = whole.init(jax.random.key(0), x, senders, receivers, True)
    edges = place(partition_edges(senders, receivers, per_part, n_devices), rows(mesh))
    weights = jax.random.normal(jax.random.key(1), (n, dim))

    def loss(net, p, features, *graph):
        out = net.apply(p, features, *graph, False, rngs={"dropout": jax.random.key(2)})
        return jnp.sum(jnp.tanh(out[:n]) * weights), out[:n]

    want_grad = jax.jit(jax.grad(lambda p: loss(whole, p, x, senders, receivers),
                                 has_aux=True))
    got_grad = jax.jit(jax.grad(lambda p, f, e: loss(split, p, f, e, None), has_aux=True))
    (want, want_out), (got, got_out) = want_grad(params), got_grad(
        params, place(padded, rows(mesh)), edges)
    np.testing.assert_allclose(got_out, want_out, rtol=1e-5, atol=1e-6)
    for (path, w), g in zip(jax.tree_util.tree_leaves_with_path(want), jax.tree.leaves(got)):
        assert np.any(w != 0), path
        np.testing.assert_allclose(np.linalg.norm(g - w) / np.linalg.norm(w), 0, atol=1e-5,
                                   err_msg=jax.tree_util.keystr(path))
