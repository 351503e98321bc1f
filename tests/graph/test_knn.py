"""Item-item kNN graphs: golden edge sets of the PyTorch reference, a brute-force numpy kNN,
blockwise == one block, symmetry, sorting, self-loops and input errors."""

import jraph
import numpy as np
import pytest

from recgoat_jax.graph.knn import knn_edges, knn_graph, knn_neighbours, with_self_loops


def _edge_set(senders, receivers):
    return set(zip(np.asarray(senders).tolist(), np.asarray(receivers).tolist()))


def _brute_force_edges(features: np.ndarray, k: int) -> set:
    """Full cosine matrix, diagonal 0, k largest per row (numpy argsort), symmetrised."""
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    similarity = unit.astype(np.float64) @ unit.T.astype(np.float64)
    np.fill_diagonal(similarity, 0.0)
    top = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    edges = set()
    for i, row in enumerate(top):
        for j in row.tolist():
            edges.add((i, j))
            edges.add((j, i))
    return edges


@pytest.fixture(scope="module")
def random_features():
    return np.random.default_rng(7).standard_normal((300, 16)).astype(np.float32)


@pytest.mark.parametrize("modality", ["text", "image"])
def test_golden_edge_sets(golden, modality):
    senders, receivers = knn_edges(golden[f"{modality}_feat"], int(golden["knn_k"]))
    expected = _edge_set(golden[f"knn_{modality}_src"], golden[f"knn_{modality}_dst"])
    assert len(senders) == len(expected)
    assert _edge_set(senders, receivers) == expected


def test_matches_brute_force(random_features):
    senders, receivers = knn_edges(random_features, 7)
    assert _edge_set(senders, receivers) == _brute_force_edges(random_features, 7)


@pytest.mark.parametrize("block_size", [1, 17, 64, 299])
def test_blockwise_equals_one_block(random_features, block_size):
    whole = knn_edges(random_features, 7, block_size=10_000)
    blocked = knn_edges(random_features, 7, block_size=block_size)
    np.testing.assert_array_equal(blocked[0], whole[0])
    np.testing.assert_array_equal(blocked[1], whole[1])


def test_symmetric_duplicate_free_sorted(random_features):
    k = 7
    senders, receivers = knn_edges(random_features, k)
    assert senders.dtype == np.int32 and receivers.dtype == np.int32
    edges = _edge_set(senders, receivers)
    assert len(edges) == len(senders), "duplicate edges"
    assert edges == {(r, s) for s, r in edges}, "not symmetric"
    order = np.lexsort((senders, receivers))
    np.testing.assert_array_equal(order, np.arange(len(senders)))
    assert not np.any(senders == receivers), "self-edge on generic data"
    n_items = random_features.shape[0]
    assert k * n_items <= len(senders) <= 2 * k * n_items
    # every item keeps its own k out-neighbours
    neighbours = knn_neighbours(random_features, k)
    for i in (0, 150, 299):
        assert set(neighbours[i].tolist()) <= set(senders[receivers == i].tolist())


def test_diagonal_zero_can_pick_self_as_reference_does():
    # Item 0 has negative cosine with everyone else, so S[0, 0] = 0 is its best "neighbour".
    features = np.array([[1.0, 0.0], [-1.0, 0.1], [-1.0, 0.3], [-1.0, -0.2]], np.float32)
    reference_like = _edge_set(*knn_edges(features, 1))
    assert (0, 0) in reference_like
    excluded = _edge_set(*knn_edges(features, 1, diagonal_value=-np.inf))
    assert all(s != r for s, r in excluded)
    assert knn_neighbours(features, 1, diagonal_value=-np.inf)[0, 0] == 2  # cosine -0.958, the least negative


def test_ties_go_to_lower_index():
    base = np.eye(6, dtype=np.float32)
    features = np.concatenate([np.tile(base[:1], (5, 1)), base[1:]])  # items 0..4 identical
    neighbours = knn_neighbours(features, 2)
    assert neighbours[4].tolist() == [0, 1]
    assert neighbours[0].tolist() == [1, 2]


def test_zero_feature_row_is_finite():
    features = np.random.default_rng(0).random((20, 5)).astype(np.float32)
    features[3] = 0.0
    senders, receivers = knn_edges(features, 4)
    assert len(senders) >= 4 * 20
    assert np.all((senders >= 0) & (senders < 20))


def test_with_self_loops():
    senders = np.array([1, 2, 0, 0, 1], np.int32)
    receivers = np.array([0, 0, 1, 2, 2], np.int32)
    s, r = with_self_loops(senders, receivers, 4)
    assert len(s) == len(senders) + 4
    assert np.all(np.diff(r) >= 0)
    assert _edge_set(s, r) == _edge_set(senders, receivers) | {(i, i) for i in range(4)}
    assert np.sum(s == r) == 4


def test_with_self_loops_rejects_unsorted_and_out_of_range():
    with pytest.raises(ValueError, match="sorted"):
        with_self_loops(np.array([0, 1]), np.array([1, 0]), 2)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        with_self_loops(np.array([0, 5]), np.array([0, 1]), 2)


def test_knn_graph(golden):
    features = golden["text_feat"]
    n_items = features.shape[0]
    graph = knn_graph(features, int(golden["knn_k"]))
    assert isinstance(graph, jraph.GraphsTuple)
    assert graph.nodes is None and graph.edges is None
    n_edges = len(golden["knn_text_src"]) + n_items
    assert graph.n_node.tolist() == [n_items] and graph.n_edge.tolist() == [n_edges]
    assert len(graph.senders) == len(graph.receivers) == n_edges
    assert np.all(np.diff(graph.receivers) >= 0)
    expected = _edge_set(golden["knn_text_src"], golden["knn_text_dst"]) | {(i, i) for i in range(n_items)}
    assert _edge_set(graph.senders, graph.receivers) == expected


@pytest.mark.parametrize(
    "features, k, message",
    [
        (np.ones((5, 3), np.float32), 5, "0 < k < number of items"),
        (np.ones((5, 3), np.float32), 0, "0 < k < number of items"),
        (np.ones(5, np.float32), 2, "2-D"),
        (np.ones((5, 3, 1), np.float32), 2, "2-D"),
        (np.array([[1.0, 2.0], [np.nan, 1.0], [0.5, 0.5]], np.float32), 1, "NaN"),
    ],
)
def test_bad_input(features, k, message):
    with pytest.raises(ValueError, match=message):
        knn_edges(features, k)
