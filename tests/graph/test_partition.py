"""The row-partitioned user-item graph: the layout is a bijection, each device's CSR block
holds exactly the edges into its rows, and LightGCN propagated over 1, 2, 4 and 8 (forced CPU)
devices equals the unpartitioned propagation in value and gradient, with all-gathers as its
only collectives."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from recgoat_jax.graph.bipartite import lightgcn_propagate, normalized_user_item_graph
from recgoat_jax.graph.partition import NodeLayout, partition_graph, partitioned_lightgcn

AXIS = "data"


def test_layout_is_a_bijection_onto_the_devices_rows():
    layout = NodeLayout(n_users=10, n_items=7, n_parts=4)  # Ub 3, Ib 2, R 5
    ids = layout.partitioned_ids(np.arange(17))
    assert len(set(ids.tolist())) == 17 and ids.max() < 4 * layout.rows_per_part
    # user 4 -> device 1, row 1; item 5 (node 15) -> device 2, row Ub + 1
    assert ids[4] == 1 * 5 + 1 and ids[15] == 2 * 5 + 3 + 1
    padded = layout.pad_users(np.ones((10, 2), np.float32))
    assert isinstance(padded, np.ndarray)  # host tables stay on host
    np.testing.assert_array_equal(padded, np.r_[np.ones((10, 2)), np.zeros((2, 2))])
    assert layout.pad_items(jnp.ones((7, 2))).shape == (8, 2)


def _dense(values, senders, indptr, n_cols):
    rows = len(indptr) - 1
    out = np.zeros((rows, n_cols))
    for r in range(rows):
        for e in range(indptr[r], indptr[r + 1]):
            out[r, senders[e]] += values[e]
    return out


def test_each_block_holds_the_edges_into_its_rows(tiny):
    graph = normalized_user_item_graph(tiny.n_users, tiny.n_items, tiny.train)
    layout = NodeLayout(tiny.n_users, tiny.n_items, 4)
    parts = partition_graph(graph, layout)
    n = 4 * layout.rows_per_part
    blocks = np.concatenate([_dense(parts.values[k], parts.senders[k], parts.indptr[k], n)
                             for k in range(4)])
    ids = layout.partitioned_ids(np.arange(tiny.n_users + tiny.n_items))
    expected = np.zeros((n, n))
    expected[np.ix_(ids, ids)] = _dense(graph.edges, graph.senders,
                                        np.searchsorted(graph.receivers,
                                                        np.arange(len(ids) + 1)), len(ids))
    np.testing.assert_allclose(blocks, expected, rtol=1e-6)
    assert (parts.indptr[:, -1] <= parts.values.shape[1]).all()
    assert parts.indptr[:, -1].sum() == len(graph.senders)  # every edge once


@pytest.mark.parametrize("n_devices", [1, 2, 4, 8])
def test_partitioned_lightgcn_equals_the_whole_graph(tiny, n_devices):
    n_users, n_items, dim, layers = tiny.n_users, tiny.n_items, 8, 3
    graph = normalized_user_item_graph(n_users, n_items, tiny.train)
    keys = jax.random.split(jax.random.key(0), 4)
    e_user = jax.random.normal(keys[0], (n_users, dim))
    e_item = jax.random.normal(keys[1], (n_items, dim))
    r_user = jax.random.normal(keys[2], (n_users, dim))
    r_item = jax.random.normal(keys[3], (n_items, dim))

    def whole(e_user, e_item):
        z = lightgcn_propagate(graph, jnp.concatenate([e_user, e_item]), layers)
        return jnp.sum(z[:n_users] * r_user) + jnp.sum(z[n_users:] * r_item), z

    (_, z), grads = jax.value_and_grad(whole, argnums=(0, 1), has_aux=True)(e_user, e_item)

    mesh = jax.make_mesh((n_devices,), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=jax.devices()[:n_devices])
    layout = NodeLayout(n_users, n_items, n_devices)
    rows = NamedSharding(mesh, P(AXIS))
    parts = jax.device_put(partition_graph(graph, layout), rows)
    propagate = partitioned_lightgcn(mesh, AXIS, layers)
    pu, pi = (jax.device_put(layout.pad_users(e_user), rows),
              jax.device_put(layout.pad_items(e_item), rows))
    ru, ri = layout.pad_users(r_user), layout.pad_items(r_item)

    def sharded(pu, pi):
        zu, zi = propagate(parts, pu, pi)
        return jnp.sum(zu * ru) + jnp.sum(zi * ri), (zu, zi)

    step = jax.jit(jax.value_and_grad(sharded, argnums=(0, 1), has_aux=True))
    (_, (zu, zi)), (gu, gi) = step(pu, pi)
    assert zu.sharding.spec == P(AXIS) or n_devices == 1
    np.testing.assert_allclose(zu[:n_users], z[:n_users], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(zi[:n_items], z[n_users:], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gu[:n_users], grads[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gi[:n_items], grads[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(zu[n_users:], 0)  # padding rows stay empty
    if n_devices > 1:  # the only communication: one all-gather per layer, forward and backward
        hlo = step.lower(pu, pi).compile().as_text()
        assert hlo.count("all-gather-start") + hlo.count(" all-gather(") == 2 * layers
        assert "reduce-scatter" not in hlo
        # the test's scalar loss is the only thing all-reduced: no table-sized gradient sum
        reduced = re.findall(r"all-reduce(?:-start)?\.?\d* = (\S+(?:, \S+)*?) all-reduce", hlo)
        assert reduced and all(set(re.findall(r"f32\[[^\]]*\]", s)) == {"f32[]"} for s in reduced)
