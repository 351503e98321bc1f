"""`jax_to_torch` refuses the parameters the PyTorch port has no counterpart for."""

import jax
import numpy as np
import pytest

from recgoat_jax import config as C
from recgoat_jax.convert import jax_to_torch, torch_to_jax
from recgoat_jax.models import build_model
from recgoat_jax.tree_utils import flatten, unflatten

TINY = ["data.preset=tiny", "model.name=recgoat", "model.dim=16", "model.gat_heads=2",
        "model.knn_k=5", "model.user_knn_k=5"]


def _params(tiny, overrides):
    model = build_model(C.load(None, TINY + overrides), tiny)
    return jax.tree.map(np.asarray, model.init(jax.random.PRNGKey(0)))


def test_user_side_parameters_are_refused_by_name(tiny):
    params = _params(tiny, ["model.user_side=true"])
    with pytest.raises(ValueError, match=r"user_gate") as info:
        jax_to_torch(params)
    assert "user_branch_text/proj/kernel" in str(info.value)
    assert "cf/" not in str(info.value)


def test_without_the_user_side_the_round_trip_is_exact(tiny):
    params = _params(tiny, [])
    back = torch_to_jax(jax_to_torch(params))
    assert jax.tree.structure(back) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)


def test_lightgcn_with_an_extra_parameter_is_refused():
    params = {"embedding_user": np.zeros((2, 3)), "embedding_item": np.zeros((4, 3)),
              "extra": {"w": np.zeros(1)}}
    with pytest.raises(ValueError, match=r"extra/w"):
        jax_to_torch(params)


def test_flatten_and_unflatten_are_inverse():
    tree = {"a": {"b": 1, "c": {"d": 2}}, "e": 3}
    assert flatten(tree) == {"a/b": 1, "a/c/d": 2, "e": 3}
    assert flatten(tree, sep=".") == {"a.b": 1, "a.c.d": 2, "e": 3}
    assert flatten(tree, "p") == {"p/a/b": 1, "p/a/c/d": 2, "p/e": 3}
    assert unflatten(flatten(tree)) == tree
