"""What RecGOAT reports beside its loss: plan marginal errors per step, fusion weights and the
user gate share from `Recommender.diagnostics`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recgoat_jax import config as C
from recgoat_jax.models import build_model
from recgoat_jax.models.base import Batch

TINY = ["data.preset=tiny", "model.name=recgoat", "model.dim=16", "model.gat_heads=2",
        "model.knn_k=5", "model.user_knn_k=5", "train.batch_size=64"]


def _batch(ds, n=64):
    rows = ds.train[:n]
    return Batch(users=jnp.asarray(rows[:, 0]), pos=jnp.asarray(rows[:, 1]),
                 neg=jnp.asarray((rows[:, 1] + 1) % ds.n_items), mask=jnp.ones(n, bool))


@pytest.mark.parametrize("overrides", [
    [],  # the reference: kernel solver, plan_scale "one"
    ["model.oat.solver=ott", "model.oat.plan_scale=dim", "model.oat.iterations=50"],
], ids=["reference-one", "ott-dim"])
def test_loss_terms_report_each_plans_marginal_error(tiny, overrides):
    cfg = C.load(None, TINY + overrides)
    model = build_model(cfg, tiny)
    params = model.init(jax.random.PRNGKey(0))
    _, terms = model.loss(params, model.inputs, _batch(tiny), jax.random.PRNGKey(1))
    from recgoat_jax.models.registry import recgoat_module
    module = recgoat_module(cfg, tiny.n_users, tiny.n_items, tuple(sorted(tiny.item_features)))
    # the same dropout key, so the same plans
    out = module.apply({"params": params}, model.inputs, deterministic=False,
                       rngs={"dropout": jax.random.PRNGKey(1)})
    for m, plan in out["plans"].items():
        plan = np.asarray(plan, np.float64)
        d = plan.shape[0]
        row_t, col_t = (1.0, 1.0) if cfg.model.oat.plan_scale == "dim" else (1 / d, 1 / d)
        want = max(np.abs(plan.sum(1) - row_t).max(), np.abs(plan.sum(0) - col_t).max())
        assert float(terms[f"plan_{m}_marginal_error"]) == pytest.approx(want, abs=1e-6)
        relative = max(np.abs(plan.sum(1) / row_t - 1).max(), np.abs(plan.sum(0) / col_t - 1).max())
        assert relative > 0  # a plan that is not exactly balanced, so the check is not trivial
        assert float(terms[f"plan_{m}_marginal_rel_error"]) == pytest.approx(relative, rel=1e-4)
        assert f"plan_{m}_sum" in terms


def test_marginal_error_carries_no_gradient(tiny):
    cfg = C.load(None, TINY + ["model.oat.solver=ott", "model.oat.plan_grad=implicit",
                               "model.oat.iterations=50"])
    model = build_model(cfg, tiny)
    params = model.init(jax.random.PRNGKey(0))
    batch = _batch(tiny)
    m = sorted(tiny.item_features)[0]
    for key in (f"plan_{m}_marginal_error", f"plan_{m}_marginal_rel_error"):
        grads = jax.grad(lambda p: model.loss(p, model.inputs, batch, jax.random.PRNGKey(1))[1][
            key])(params)
        assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(grads)), key


@pytest.mark.parametrize("weights", ["unconstrained", "softmax"])
def test_diagnostics_are_the_fusion_weights_and_the_gate_share(tiny, weights):
    cfg = C.load(None, TINY + [f"model.oat.fusion_weights={weights}", "model.user_side=true",
                               "model.user_gate_init=0.3"])
    model = build_model(cfg, tiny)
    params = model.init(jax.random.PRNGKey(0))
    # move the parameters away from their initial values, so that the check is not trivial
    params = jax.tree.map(lambda x: x + 0.1, params)
    got = jax.jit(model.diagnostics)(params)
    mods = sorted(tiny.item_features)
    raw = np.array([float(params["fuse"][f"weight_{m}"]) for m in mods])
    if weights == "softmax":
        e = np.exp(np.concatenate([[0.0], raw]))
        want = (e / e.sum())[1:]
    else:
        want = raw
    assert set(got) == {f"fusion_weight_{m}" for m in mods} | {"user_gate_share"}
    for k, m in enumerate(mods):
        assert float(got[f"fusion_weight_{m}"]) == pytest.approx(want[k], rel=1e-6)
    gate = float(params["user_gate"])
    assert float(got["user_gate_share"]) == pytest.approx(1 / (1 + np.exp(-gate)), rel=1e-6)


def test_diagnostics_without_the_user_side_and_for_other_models(tiny):
    model = build_model(C.load(None, TINY), tiny)
    got = model.diagnostics(model.init(jax.random.PRNGKey(0)))
    assert "user_gate_share" not in got
    assert float(got["fusion_weight_text"]) == pytest.approx(0.8)  # the reference's beta
    for name in ("mf", "lightgcn", "popularity"):
        assert build_model(C.load(None, TINY + [f"model.name={name}"]), tiny).diagnostics is None
