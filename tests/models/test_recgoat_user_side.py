"""The paper's user side: user features -> user kNN graph -> GAT branch, gated into z_user."""

import dataclasses

import jax
import numpy as np
import pytest

from recgoat_jax import config as C
from recgoat_jax.models import build_model
from recgoat_jax.models.registry import recgoat_module
from recgoat_jax.train.loop import Trainer

TINY = ["data.preset=tiny", "model.name=recgoat", "model.dim=16", "model.gat_heads=2",
        "model.knn_k=5", "model.user_knn_k=5", "model.oat.solver=ott",
        "model.oat.plan_scale=dim", "loss.contrastive=cmcl", "train.batch_size=128",
        "eval.ks=[5, 10, 20]", "eval.user_batch=32"]


def test_user_branch_is_built_from_the_user_features_and_gated(tiny):
    cfg = C.load(None, TINY + ["model.user_side=true", "model.user_gate_init=0.25"])
    model = build_model(cfg, tiny)
    params = model.init(jax.random.PRNGKey(0))
    assert "user_branch_text" in params
    assert float(jax.nn.sigmoid(params["user_gate"])) == pytest.approx(0.25, rel=1e-6)
    z_user, z_item = model.embed(params, model.inputs)
    # other user features (same shapes, same kNN graph) change the users, not the items
    negated = jax.tree.map(lambda x: -x, model.inputs["user_features"]["text"])
    inputs = dict(model.inputs, user_features={"text": negated})
    z_user2, z_item2 = model.embed(params, inputs)
    assert not np.allclose(z_user, z_user2, atol=1e-4)
    np.testing.assert_allclose(z_item, z_item2, rtol=1e-6)
    # a closed gate (share 0): the user embedding is LightGCN's alone, whatever the features
    closed = dict(params, user_gate=np.float32(-1e4))
    np.testing.assert_allclose(model.embed(closed, model.inputs)[0],
                               model.embed(closed, inputs)[0], rtol=1e-6)


@pytest.mark.parametrize("share", [0.0, 1.0, -0.1])
def test_user_gate_init_outside_the_open_unit_interval_is_refused(tiny, share):
    with pytest.raises(ValueError, match="model.user_gate_init"):
        C.load(None, TINY + ["model.user_side=true", f"model.user_gate_init={share}"])
    # the module itself, built without a config, refuses it too
    module = recgoat_module(C.load(None, TINY + ["model.user_side=true"]), tiny.n_users,
                            tiny.n_items, ("text",), ("text",)).clone(user_gate_init=share)
    inputs = build_model(C.load(None, TINY + ["model.user_side=true"]), tiny).inputs
    with pytest.raises(ValueError, match="user_gate_init must be in"):
        module.init({"params": jax.random.PRNGKey(0)}, inputs, deterministic=True)


def test_user_side_switches_off_without_user_features(tiny):
    no_users = dataclasses.replace(tiny, user_features={})
    cfg = C.load(None, TINY + ["model.user_side=true"])
    params = build_model(cfg, no_users).init(jax.random.PRNGKey(0))
    assert "user_gate" not in params
    assert not any(k.startswith("user_branch") for k in params)


def test_training_with_the_user_side_is_finite_and_lowers_the_loss(tiny):
    cfg = C.load(None, TINY + ["model.user_side=true", "train.lr=0.01"])
    trainer = Trainer(cfg, tiny)
    state = trainer.init_state()
    losses = []
    for _ in range(4):
        state, stats, _ = trainer.train_epoch(state)
        losses.append(float(stats["loss"]))
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0]
