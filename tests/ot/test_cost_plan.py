"""OAT cost and transport plan: closed form vs broadcast, golden reference, solver variants."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recgoat_jax.ot import (PlanOptions, feature_cost, feature_cost_broadcast, kernel_sinkhorn,
                            ott_output, plan_diagnostics, transport_plan)


# PlanOptions is a frozen (hashable) dataclass, so it can be a static argument
solve = jax.jit(transport_plan, static_argnames="options")
_diagnose = jax.jit(plan_diagnostics, static_argnames="plan_scale")


def diagnose(plan, options):
    return _diagnose(plan, options.plan_scale)


def _rel_err(actual, expected) -> float:
    return float(np.max(np.abs(np.asarray(actual) - expected)) / np.max(np.abs(expected)))


def numpy_reference_sinkhorn(cost, epsilon, iterations):
    """REFERENCE.md section 3 step 3, written out in float32 numpy."""
    cost = np.asarray(cost, np.float32)
    d = cost.shape[0]
    mu = nu = np.full(d, 1.0 / d, np.float32)
    kernel = np.exp(-cost / np.float32(epsilon))
    u = np.full(d, 1.0 / d, np.float32)
    v = np.full(d, 1.0 / d, np.float32)
    for _ in range(iterations):
        u = mu / (kernel @ v + np.float32(1e-8))
        v = nu / (kernel.T @ u + np.float32(1e-8))
    return u[:, None] * kernel * v[None, :]


# ---------------------------------------------------------------- cost

@pytest.mark.parametrize("n_items,dim,offset", [(45, 16, 0.0), (300, 32, 0.0), (200, 24, 3.0)])
def test_closed_form_cost_equals_broadcast_form(n_items, dim, offset):
    rng = np.random.default_rng(n_items)
    z_m = (rng.normal(size=(n_items, dim)) * 0.7 + offset).astype(np.float32)
    z_cf = (rng.normal(size=(n_items, dim)) * 0.1 - offset / 2).astype(np.float32)
    closed = feature_cost(z_m, z_cf, scale=100.0)
    direct = np.mean((z_m[:, :, None].astype(np.float64) - z_cf[:, None, :]) ** 2, axis=0) * 100
    assert closed.shape == (dim, dim)
    assert _rel_err(closed, direct) < 1e-5
    assert _rel_err(feature_cost_broadcast(z_m, z_cf, scale=100.0), direct) < 1e-5


def test_cost_of_identical_tables_has_zero_diagonal_and_no_negatives():
    z = np.random.default_rng(1).normal(size=(50, 8)).astype(np.float32) + 10.0
    cost = np.asarray(feature_cost(z, z))
    assert np.all(cost >= 0)
    assert np.max(np.abs(np.diag(cost))) < 1e-4 * np.max(cost)


def test_masked_cost_is_the_cost_of_the_kept_rows():
    rng = np.random.default_rng(2)
    z_m, z_cf = rng.normal(size=(2, 30, 6)).astype(np.float32)
    mask = rng.random(30) < 0.6
    expected = feature_cost_broadcast(z_m[mask], z_cf[mask], scale=3.0)
    assert _rel_err(feature_cost(z_m, z_cf, scale=3.0, mask=jnp.asarray(mask)), expected) < 1e-5
    assert _rel_err(feature_cost_broadcast(z_m, z_cf, 3.0, jnp.asarray(mask)), expected) < 1e-5


def test_cost_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        feature_cost(jnp.zeros((4, 3)), jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="mask"):
        feature_cost(jnp.zeros((4, 3)), jnp.zeros((4, 3)), mask=jnp.ones(5, bool))


# ---------------------------------------------------------------- golden reference

def test_golden_small_cost_plan_and_aligned(golden):
    cost = feature_cost(golden["ot_small/z_m"], golden["ot_small/z_cf"], scale=100.0)
    assert _rel_err(cost, golden["ot_small/cost"]) < 1e-4
    plan = solve(cost, PlanOptions())  # the defaults are the reference's settings
    np.testing.assert_allclose(plan, golden["ot_small/plan"], rtol=1e-4, atol=1e-8)
    aligned = golden["ot_small/z_m"] @ (np.asarray(plan) + golden["param/fuse.delta_img"])
    assert _rel_err(aligned, golden["ot_small/aligned"]) < 1e-4


@pytest.mark.parametrize("modality", ["text", "image"])
def test_golden_forward_cost_and_plan(golden, modality):
    cost = feature_cost(golden[f"out/z_item_{modality}"], golden["out/z_item_cf"], scale=100.0)
    assert _rel_err(cost, golden[f"out/cost_{modality}"]) < 1e-4
    plan = solve(cost, PlanOptions())
    # at these scales the reference plan (partly) underflows; compare absolutely too
    np.testing.assert_allclose(plan, golden[f"out/plan_{modality}"], rtol=1e-4, atol=1e-7)
    if modality == "image":  # image features (std ~0.7) underflow the kernel completely
        assert bool(diagnose(plan, PlanOptions())["all_zero"])


# ---------------------------------------------------------------- reference solver

def test_reference_solver_matches_numpy_loop_when_it_converges():
    rng = np.random.default_rng(3)
    z_m, z_cf = (rng.normal(size=(2, 40, 12)) * 0.01).astype(np.float32)
    cost = feature_cost(z_m, z_cf)
    expected = numpy_reference_sinkhorn(cost, 0.01, 100)
    plan = kernel_sinkhorn(cost, 0.01, 100)
    np.testing.assert_allclose(plan, expected, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(np.sum(plan), 1.0, rtol=1e-4)
    np.testing.assert_allclose(kernel_sinkhorn(cost, 0.01, 7),
                               numpy_reference_sinkhorn(cost, 0.01, 7), rtol=1e-4, atol=1e-9)


def test_reference_solver_underflows_to_an_all_zero_plan_like_the_reference():
    rng = np.random.default_rng(4)
    z_m, z_cf = (rng.normal(size=(2, 40, 12)) * 0.1).astype(np.float32)
    cost = feature_cost(z_m, z_cf)
    expected = numpy_reference_sinkhorn(cost, 0.01, 100)
    assert np.all(expected == 0)  # the regime REFERENCE.md section 7 defect 2 describes
    cfg = PlanOptions()
    plan = solve(cost, cfg)
    assert np.all(np.asarray(plan) == 0)
    diag = diagnose(plan, cfg)
    assert bool(diag["all_zero"]) and not bool(diag["has_nan"])
    # the log-domain solver has no such problem on the same cost
    ott_cfg = PlanOptions(solver="ott", threshold=1e-3, iterations=300)
    ott_diag = diagnose(solve(cost, ott_cfg), ott_cfg)
    assert not bool(ott_diag["all_zero"]) and float(ott_diag["row_error"]) < 1e-3


# ---------------------------------------------------------------- ott solvers

@pytest.fixture(scope="module")
def moderate_cost():
    rng = np.random.default_rng(5)
    z_m, z_cf = (rng.normal(size=(2, 60, 10)) * 0.03).astype(np.float32)
    return feature_cost(z_m, z_cf)  # entries ~0.2, epsilon 0.01: well posed in log domain


def test_ott_plan_meets_its_marginals_to_its_threshold(moderate_cost):
    cfg = PlanOptions(solver="ott", threshold=1e-4, iterations=1000)
    plan = np.asarray(solve(moderate_cost, cfg), np.float64)
    d = plan.shape[0]
    # ott stops once the L1 error of the column marginal is below threshold; rows are exact
    assert np.sum(np.abs(plan.sum(axis=0) - 1 / d)) < cfg.threshold
    assert np.sum(np.abs(plan.sum(axis=1) - 1 / d)) < cfg.threshold
    assert np.all(plan >= 0)
    scaled = solve(moderate_cost, PlanOptions(solver="ott", threshold=1e-4,
                                       iterations=1000, plan_scale="dim"))
    np.testing.assert_allclose(np.sum(scaled, axis=1), np.ones(d), atol=1e-3)
    np.testing.assert_allclose(scaled, plan * d, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("options", [
    dict(solver="ott", momentum=1.3),
    dict(solver="ott", anderson=3),
    dict(solver="ott", epsilon_init=1.0, epsilon_decay=0.8),
    dict(solver="ott", tau_a=0.9, tau_b=0.8),
    dict(solver="ott", min_iterations=100),
    dict(solver="lowrank", rank=3, iterations=30),
], ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_solver_variants_return_finite_plans(moderate_cost, options):
    cfg = PlanOptions(**options)
    plan = solve(moderate_cost, cfg)
    diag = diagnose(plan, cfg)
    assert plan.shape == moderate_cost.shape
    assert not bool(diag["has_nan"]) and not bool(diag["all_zero"])
    assert np.all(np.asarray(plan) >= -1e-7)
    if cfg.tau_a == 1.0 and cfg.tau_b == 1.0:  # balanced: total mass 1 (low rank: loosely)
        np.testing.assert_allclose(float(diag["mass"]), 1.0, atol=1e-2)


def test_plan_diagnostics_reports_marginal_errors_and_nans():
    cfg = PlanOptions(plan_scale="dim")
    diag = diagnose(jnp.eye(4), cfg)  # a permutation: the exact barycentric map
    assert float(diag["row_error"]) == 0 and float(diag["col_error"]) == 0
    assert float(diag["mass"]) == 4 and not bool(diag["all_zero"])
    bad = diagnose(jnp.eye(4).at[0, 1].set(jnp.nan), PlanOptions())
    assert bool(bad["has_nan"])
    one = diagnose(jnp.eye(4) / 4, PlanOptions())
    assert float(one["row_error"]) == 0
    assert float(diagnose(jnp.eye(4), PlanOptions())["row_error"]) == pytest.approx(0.75)


# ---------------------------------------------------------------- option validation

@pytest.mark.parametrize("options,field", [
    (dict(solver="sinkhorn"), "solver"),
    (dict(plan_grad="autodiff"), "plan_grad"),
    (dict(plan_scale="rows"), "plan_scale"),
    (dict(plan_grad="implicit"), "plan_grad"),  # reference solver has no implicit
    (dict(solver="lowrank", plan_grad="implicit"), "plan_grad"),
    (dict(solver="lowrank", plan_grad="unroll"), "plan_grad"),
    (dict(solver="ott", plan_grad="unroll", min_iterations=100), "min_iterations"),
    (dict(epsilon=0.0), "epsilon"),
    (dict(solver="ott", min_iterations=200), "min_iterations"),
    (dict(solver="ott", momentum=2.5), "momentum"),
    (dict(solver="ott", tau_a=0.0), "tau_a"),
    (dict(momentum=1.5), "momentum"),  # ott-only option with the reference solver
    (dict(solver="ott", anderson=2, plan_grad="unroll"), "plan_grad"),
    (dict(solver="lowrank", rank=99), "rank"),
])
def test_bad_options_raise_an_error_naming_the_field(moderate_cost, options, field):
    with pytest.raises(ValueError, match=field):
        solve(moderate_cost, PlanOptions(**options))


def test_plan_diagnostics_marginal_error_is_the_larger_of_row_and_column():
    plan = jnp.asarray([[0.5, 0.0], [0.25, 0.25]])  # rows 0.5, 0.5; columns 0.75, 0.25
    diag = plan_diagnostics(plan, "one")
    assert float(diag["row_error"]) == 0.0
    assert float(diag["marginal_error"]) == pytest.approx(0.25)
    assert float(diag["relative_error"]) == pytest.approx(0.5)  # column 0.75 for a target 0.5
    dim = plan_diagnostics(plan, "dim")  # targets 1 and 1: column 1 sums to 0.25, 75% off
    assert float(dim["relative_error"]) == pytest.approx(0.75)


def test_transport_plan_refuses_anything_but_plan_options(moderate_cost):
    with pytest.raises(ValueError, match="PlanOptions"):
        transport_plan(moderate_cost, {"solver": "reference"})


def test_ot_package_does_not_read_the_run_configuration():
    import pathlib
    import recgoat_jax.ot as ot_pkg
    for file in pathlib.Path(ot_pkg.__file__).parent.glob("*.py"):
        assert "recgoat_jax.config" not in file.read_text(), file.name


def test_cost_norm_solves_the_normalised_cost_and_keeps_huge_costs_finite():
    cost = jax.random.uniform(jax.random.key(3), (16, 16)) * 1e8  # spans ~1e10 epsilon
    common = dict(solver="ott", epsilon=0.01, iterations=500, min_iterations=500)
    raw = ott_output(cost, PlanOptions(**common)).matrix
    assert float(plan_diagnostics(raw * 16, "dim")["relative_error"]) > 1.0  # float32 lost it
    for norm, scale in (("max", cost.max()), ("mean", cost.mean())):
        plan = ott_output(cost, PlanOptions(**common, cost_norm=norm)).matrix
        by_hand = ott_output(cost / scale, PlanOptions(**common)).matrix
        np.testing.assert_allclose(plan, by_hand, rtol=1e-4, atol=1e-7)
        assert float(plan_diagnostics(plan * 16, "dim")["relative_error"]) < 1e-2
    with pytest.raises(ValueError, match="cost_norm"):
        PlanOptions(solver="reference", cost_norm="max")
