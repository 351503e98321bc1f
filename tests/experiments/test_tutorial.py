"""The differentiable-OT tutorial (experiments/tutorial/tutorial.py) runs, and every number its
text quotes holds.

The tutorial runs once in fast mode (module fixture). Each claim is checked against the
arrays the tutorial returns, recomputed here where possible with independent tools: scipy's
linear program and assignment solver, POT's own Sinkhorn in float64, numpy float64 kernels.
`test_every_quoted_number_is_checked` fails when the prose quotes a number that no test here
covers. RECGOAT_TUTORIAL_FULL=1 runs the full mode instead, the one that renders the committed
page (about a minute more).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import ot
import pytest
from scipy.optimize import linear_sum_assignment, linprog

from recgoat_jax import config as config_lib
from recgoat_jax.data import PRESETS

REPO = Path(__file__).resolve().parents[2]
TUTORIAL = REPO / "experiments" / "tutorial" / "tutorial.py"
REFERENCE = REPO / "experiments" / "configs" / "recgoat-reference.toml"
FIGURES = ("1_exact_plan.png", "2_entropic_plans.png", "3_underflow.png", "4_gradient_flow.png",
           "5_recgoat_plans.png")


@pytest.fixture(scope="module")
def tutorial(load_script):
    return load_script("experiments/tutorial/tutorial.py", "recgoat_tutorial")


@pytest.fixture(scope="module")
def run(tutorial, tmp_path_factory):
    out = tmp_path_factory.mktemp("tutorial")
    fast = os.environ.get("RECGOAT_TUTORIAL_FULL", "") in ("", "0")
    results = tutorial.main(fast=fast, out_dir=out, log=lambda *_: None)
    return results, out


@pytest.fixture(scope="module")
def s1(run):
    return run[0]["discrete"]


@pytest.fixture(scope="module")
def s2(run):
    return run[0]["sinkhorn"]


@pytest.fixture(scope="module")
def s3(run):
    return run[0]["gradients"]


@pytest.fixture(scope="module")
def s4(run):
    return run[0]["recgoat"]


def _margins(plan, a, b):
    plan = np.asarray(plan, np.float64)
    return np.abs(plan.sum(1) - a).max(), np.abs(plan.sum(0) - b).max()


# Every {{name}} the prose quotes must appear in this list, i.e. be checked by a test below.
CHECKED = {
    # section 1
    "n_source", "n_target", "n_pairs", "nonzero_bound", "exact_cost", "exact_nonzeros",
    "exact_entropy", "max_entropy", "entropic_table",
    # section 2
    "check_epsilon", "check_iterations", "kernel_vs_ott", "mean_entry", "dim", "cost_scale",
    "reference_epsilon", "reference_iterations", "n_items", "std", "min_cost",
    "min_cost_over_eps", "kernel_log10", "float32_tiny", "kernel_zero_percent",
    "plain_nan_percent", "reference_nan_count", "reference_mass", "log_iterations",
    "log_marginal_error", "ott_marginal_error", "ott_iterations", "log_vs_ott", "dim_entry",
    "log_uv_max", "log_uv_half", "float32_log_max", "collapse_std", "sweep_log_error",
    # section 3
    "grad_epsilon", "unroll_iterations", "short_iterations", "fd_step", "fd_evaluations",
    "unrolled_vs_fd", "implicit_vs_fd", "unrolled_vs_implicit", "short_unrolled_vs_fd",
    "envelope_error", "divergence_self", "divergence_self_grad", "entropic_self",
    "entropic_self_grad", "flow_points", "flow_steps", "flow_w2_start", "flow_w2_end",
    "flow_w2_ratio",
    # section 4
    "n_users", "n_items_rec", "n_train", "rec_dim", "rec_epsilon", "ot_weight", "epochs",
    "ot_first", "ot_last", "text_row_error", "text_column_error", "image_row_error",
    "image_column_error", "text_row_max", "image_row_max", "text_cost_ratio",
    "image_cost_ratio", "text_kernel_mass", "image_kernel_mass", "text_kernel_mass_initial",
    "image_kernel_mass_initial", "text_delta_change", "image_delta_change", "text_share_dim",
    "image_share_dim", "text_share_one", "image_share_one",
}


def test_every_quoted_number_is_checked(tutorial):
    quoted = tutorial.placeholder_names(TUTORIAL.read_text())
    assert quoted, "the prose quotes no number: the placeholder syntax changed?"
    assert quoted <= CHECKED, f"numbers quoted but not checked: {sorted(quoted - CHECKED)}"


def test_page_and_figures_are_written(run):
    results, out = run
    page = (out / "tutorial.md").read_text()
    assert "{{" not in page and "}}" not in page
    assert "def sinkhorn_kernel" in page and "def sinkhorn_log" in page  # code cells shown
    assert "def figure_exact" not in page  # hidden cells left out
    for name in FIGURES:
        assert f"(figures/{name})" in page
        png = (out / "figures" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_committed_page_links_its_committed_figures():
    page = TUTORIAL.with_name("tutorial.md")
    if not page.exists():
        pytest.skip("tutorial.md is not rendered yet (python experiments/tutorial/tutorial.py)")
    text = page.read_text()
    for name in FIGURES:
        assert f"(figures/{name})" in text
        assert (page.parent / "figures" / name).exists()


# ---------------------------------------------------------------- 1. discrete OT

def test_exact_plan_is_optimal_and_sparse(s1):
    cost, exact, a, b = s1["cost"], s1["exact"], s1["a"], s1["b"]
    n, m = cost.shape
    assert (s1["n_source"], s1["n_target"], s1["n_pairs"]) == (n, m, n * m)
    assert max(_margins(exact, a, b)) < 1e-12 and exact.min() >= 0
    # the optimum of the same linear program, solved by scipy (HiGHS) instead of POT
    rows = np.kron(np.eye(n), np.ones(m))
    cols = np.kron(np.ones(n), np.eye(m))
    lp = linprog(cost.ravel(), A_eq=np.vstack([rows, cols]), b_eq=np.concatenate([a, b]),
                 bounds=(0, None), method="highs")
    assert lp.status == 0
    assert s1["exact_cost"] == pytest.approx(lp.fun, abs=1e-9)
    assert s1["exact_nonzeros"] == int(np.sum(exact > 1e-12))
    assert s1["nonzero_bound"] == n + m - 1
    assert s1["exact_nonzeros"] <= s1["nonzero_bound"]
    assert s1["exact_nonzeros"] < n * m / 2  # "sparse"
    assert (exact > 1e-12).sum(1).max() >= 2  # "a few split it"


def test_entropic_plans_blur_as_epsilon_grows(s1):
    rows, plans = s1["entropic_rows"], s1["plans"]
    a, b, cost, exact = s1["a"], s1["b"], s1["cost"], s1["exact"]
    product = np.outer(a, b)
    p = exact[exact > 0]
    assert s1["exact_entropy"] == pytest.approx(-np.sum(p * np.log(p)), rel=1e-9)
    assert s1["max_entropy"] == pytest.approx(math.log(cost.size), rel=1e-12)
    entropies = []
    for row, plan in zip(rows, plans):
        plan = np.asarray(plan, np.float64)
        q = plan[plan > 0]
        entropies.append(-np.sum(q * np.log(q)))
        assert row["entropy"] == pytest.approx(entropies[-1], rel=1e-9)
        assert row["transport_cost"] == pytest.approx(np.sum(plan * cost), rel=1e-9)
        assert row["l1_to_exact"] == pytest.approx(np.abs(plan - exact).sum(), rel=1e-9)
        assert row["l1_to_product"] == pytest.approx(np.abs(plan - product).sum(), rel=1e-9)
        assert max(_margins(plan, a, b)) / a.max() == pytest.approx(row["marginal_error"],
                                                                    abs=1e-12)
        assert row["marginal_error"] < 1e-4
        assert row["transport_cost"] >= s1["exact_cost"] - 1e-6  # "rises above the optimum"
        assert f"| {row['entropy']:.3f} | {row['transport_cost']:.4f} |" in s1["entropic_table"]
    assert np.all(np.diff(entropies) > 0)  # blurs monotonically
    assert np.all(np.diff([r["transport_cost"] for r in rows]) > 0)
    assert np.all(np.diff([r["l1_to_exact"] for r in rows]) > 0)
    assert np.all(np.diff([r["l1_to_product"] for r in rows]) < 0)
    # "from close to the exact plan's towards log(nm)"
    assert abs(entropies[0] - s1["exact_entropy"]) < 0.1
    assert s1["max_entropy"] - entropies[-1] < 0.1
    assert rows[0]["l1_to_exact"] < 0.1 and rows[-1]["l1_to_product"] < 0.25


# ---------------------------------------------------------------- 2. Sinkhorn, underflow

def test_dozen_line_sinkhorn_matches_ott_and_pot(s1, s2, tutorial):
    assert s2["kernel_vs_ott"] < 1e-6
    assert s2["mean_entry"] == pytest.approx(1 / s1["cost"].size)
    # our kernel loop at (check_epsilon, check_iterations) against POT's log-domain Sinkhorn
    import jax.numpy as jnp
    cost, a, b = s1["cost"], s1["a"], s1["b"]
    ours = np.asarray(tutorial.sinkhorn_kernel(jnp.asarray(cost), jnp.asarray(a), jnp.asarray(b),
                                               s2["check_epsilon"], s2["check_iterations"]))
    pot = ot.sinkhorn(a, b, cost, s2["check_epsilon"], method="sinkhorn_log",
                      numItermax=100_000, stopThr=1e-14)
    assert np.abs(ours - pot).max() < 1e-6


def test_settings_are_the_references():
    oat = config_lib.load(REFERENCE).model.oat
    assert (oat.cost_scale, oat.epsilon, oat.iterations) == (100.0, 0.01, 100)


def test_kernel_domain_underflows_on_the_reference_settings(s2):
    oat = config_lib.load(REFERENCE).model.oat
    assert (s2["cost_scale"], s2["reference_epsilon"], s2["reference_iterations"]) == (
        oat.cost_scale, oat.epsilon, oat.iterations)
    assert s2["std"] == config_lib.ModelConfig().init_std == 0.1
    cost = s2["underflow_cost"]
    assert cost.shape == (s2["dim"], s2["dim"])
    assert s2["dim_entry"] == 1 / s2["dim"] ** 2
    assert s2["min_cost"] == pytest.approx(float(cost.min()))
    assert s2["min_cost_over_eps"] == pytest.approx(cost.min() / s2["reference_epsilon"])
    assert s2["kernel_log10"] == pytest.approx(s2["min_cost_over_eps"] / math.log(10))
    assert s2["float32_tiny"] == float(np.finfo(np.float32).smallest_subnormal)
    assert 10.0 ** -s2["kernel_log10"] < s2["float32_tiny"]
    kernel = np.exp(-cost.astype(np.float32) / np.float32(s2["reference_epsilon"]))
    assert s2["kernel_zero_percent"] == 100.0 and np.all(kernel == 0)
    assert s2["plain_nan_percent"] == 100.0 and np.all(np.isnan(s2["plain_plan"]))
    reference = s2["reference_plan"]
    assert s2["reference_nan_count"] == 0 and np.all(np.isfinite(reference))
    assert s2["reference_mass"] == 0.0 and np.all(reference == 0)


def test_log_domain_meets_the_marginals_where_the_kernel_fails(s2):
    d = s2["dim"]
    uniform = np.full(d, 1 / d)
    for key, claim in (("log_plan", "log_marginal_error"), ("ott_plan", "ott_marginal_error")):
        error = max(_margins(s2[key], uniform, uniform)) * d
        assert error == pytest.approx(s2[claim], rel=1e-3)
        assert error < 5e-3  # "meets its marginals": within 0.5% of 1/d
    assert s2["ott_iterations"] < 2000  # stopped at its threshold, before the budget
    diff = np.abs(s2["log_plan"].astype(np.float64) - s2["ott_plan"]).max()
    assert s2["log_vs_ott"] == pytest.approx(diff, rel=1e-6)
    assert s2["log_vs_ott"] < 0.2 * s2["dim_entry"]


def test_no_kernel_scaling_fits_in_float32(s2):
    # log(u_i v_j) = log P_ij + C_ij / eps on every entry the plan keeps
    plan, cost = s2["ott_plan"].astype(np.float64), s2["underflow_cost"].astype(np.float64)
    kept = plan > 1e-30
    largest = np.max(np.log(plan[kept]) + cost[kept] / s2["reference_epsilon"])
    assert largest <= s2["log_uv_max"] + 1.0
    assert s2["float32_log_max"] == pytest.approx(np.log(np.finfo(np.float32).max))
    assert s2["log_uv_half"] == pytest.approx(s2["log_uv_max"] / 2)
    assert largest / 2 > s2["float32_log_max"]  # so some u_i or v_j overflows float32
    assert s2["log_uv_half"] > s2["float32_log_max"]


def test_sweep_kernel_collapses_log_domain_does_not(s2):
    sweep = s2["sweep"]
    collapse = s2["collapse_std"]
    assert collapse <= s2["std"]
    assert sweep[0]["reference_mass"] > 0.99  # keeps its mass while the embeddings are small
    for r in sweep:
        assert (r["reference_mass"] < 1e-6) == (r["std"] >= collapse)  # lost from there on
        assert abs(r["ott_mass"] - 1) < 1e-3
        assert r["ott_error"] <= s2["sweep_log_error"] < 5e-3


# ---------------------------------------------------------------- 3. gradients

def test_gradients_agree_with_finite_differences(s3):
    fd, unrolled, implicit = s3["grad_fd"], s3["grad_unrolled"], s3["grad_implicit"]
    scale = np.abs(fd).max()
    assert s3["fd_evaluations"] == 2 * fd.size
    for claim, got, want in (("unrolled_vs_fd", unrolled, fd), ("implicit_vs_fd", implicit, fd),
                             ("unrolled_vs_implicit", unrolled, implicit)):
        assert s3[claim] == pytest.approx(np.abs(got - want).max() / scale, rel=1e-6)
        assert s3[claim] < 1e-6
    short = np.abs(s3["grad_short"] - fd).max() / scale
    assert s3["short_unrolled_vs_fd"] == pytest.approx(short, rel=1e-6)
    assert s3["short_unrolled_vs_fd"] > max(0.05, 1000 * s3["unrolled_vs_fd"])
    assert s3["short_iterations"] < s3["unroll_iterations"]
    assert s3["envelope_error"] < 1e-9


def test_gradient_matches_pot_finite_differences(s1, s3):
    """The same objective <P_eps(x), C(x)> through POT's Sinkhorn (an independent solver)."""
    x, y, a, b = s1["x"], s1["y"], s1["a"], s1["b"]
    eps, h = s3["grad_epsilon"], 1e-5

    def objective(x):
        cost = ot.dist(x, y)
        plan = ot.sinkhorn(a, b, cost, eps, method="sinkhorn_log", numItermax=100_000,
                           stopThr=1e-15)
        return float(np.sum(plan * cost))

    fd = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[index] = h
        fd[index] = (objective(x + e) - objective(x - e)) / (2 * h)
    assert np.abs(s3["grad_implicit"] - fd).max() / np.abs(fd).max() < 1e-5


def test_divergence_is_debiased(s3):
    assert abs(s3["divergence_self"]) < 1e-5
    assert s3["entropic_self"] > 1e-3
    assert s3["divergence_self_grad"] < 0.01 * s3["entropic_self_grad"]


def test_gradient_flow_reaches_the_target(s3):
    path, moons = s3["path"], s3["moons"]
    assert path.shape == (s3["flow_steps"] + 1, s3["flow_points"], 2)

    def w2(points):  # equal uniform clouds: optimal transport is an assignment
        cost = ((points[:, None, :].astype(np.float64) - moons[None, :, :]) ** 2).sum(-1)
        rows, cols = linear_sum_assignment(cost)
        return cost[rows, cols].mean()

    assert s3["flow_w2_start"] == pytest.approx(w2(path[0]), rel=1e-6)
    assert s3["flow_w2_end"] == pytest.approx(w2(path[-1]), rel=1e-6)
    assert s3["flow_w2_ratio"] == pytest.approx(s3["flow_w2_start"] / s3["flow_w2_end"])
    assert s3["flow_w2_ratio"] > 20


# ---------------------------------------------------------------- 4. RecGOAT

def test_recgoat_settings(s4):
    tiny = PRESETS["tiny"]
    assert (s4["n_users"], s4["n_items_rec"]) == (tiny.n_users, tiny.n_items)
    assert 0 < s4["n_train"] <= tiny.n_interactions
    assert s4["rec_dim"] == 16 and s4["ot_weight"] > 0
    assert s4["rec_epsilon"] == config_lib.load(REFERENCE).model.oat.epsilon
    assert s4["epochs"] == len(s4["history"])


def test_distribution_loss_falls(s4):
    assert s4["ot_first"] == s4["history"][0]["ot"]
    assert s4["ot_last"] == s4["history"][-1]["ot"]
    assert s4["ot_last"] < s4["ot_first"] / 3


@pytest.mark.parametrize("m", ["text", "image"])
def test_trained_plan(s4, m):
    plan, cost = s4[f"{m}_plan"], s4[f"{m}_cost"].astype(np.float64)
    d = s4["rec_dim"]
    assert plan.shape == (d, d) and plan.min() >= 0
    assert s4[f"{m}_row_error"] == pytest.approx(np.abs(plan.sum(1) - 1).max())
    assert s4[f"{m}_column_error"] == pytest.approx(np.abs(plan.sum(0) - 1).max())
    assert s4[f"{m}_row_error"] < 1e-2 and s4[f"{m}_column_error"] < 1e-2
    assert s4[f"{m}_row_max"] == pytest.approx(plan.max(1).mean())
    assert s4[f"{m}_row_max"] > 4 / d  # concentrated: uniform rows would hold 1/d
    ratio = np.sum(plan / d * cost) / cost.mean()
    assert s4[f"{m}_cost_ratio"] == pytest.approx(ratio, rel=1e-5)
    assert s4[f"{m}_cost_ratio"] < 0.9


def _reference_sinkhorn(cost, eps, iterations, dtype):
    """The reference's kernel Sinkhorn (1e-8 guard) in numpy -> (plan, kernel, v)."""
    d = cost.shape[0]
    kernel = np.exp(-cost.astype(dtype) / dtype(eps))
    target = dtype(1 / d)
    u = v = np.full(d, target, dtype)
    for _ in range(iterations):
        u = target / (kernel @ v + dtype(1e-8))
        v = target / (kernel.T @ u + dtype(1e-8))
    return u[:, None] * kernel * v[None, :], kernel, v


@pytest.mark.parametrize("m", ["text", "image"])
def test_reference_solver_loses_mass_to_its_guard(s4, m):
    oat = config_lib.load(REFERENCE).model.oat
    mass = s4[f"{m}_kernel_mass"]
    assert 0 <= mass < 0.99 and 0 <= s4[f"{m}_kernel_mass_initial"] < 0.99  # "only"
    cost, d = s4[f"{m}_cost"], s4["rec_dim"]
    plan, _, _ = _reference_sinkhorn(cost, oat.epsilon, oat.iterations, np.float32)
    assert plan.sum() == pytest.approx(mass, abs=0.01)
    # in float64 the starved rows are exactly those where K v is far below the guard
    plan, kernel, v = _reference_sinkhorn(cost, oat.epsilon, oat.iterations, np.float64)
    starved = plan.sum(1) < 0.5 / d
    assert starved.any()
    np.testing.assert_array_equal(starved, kernel @ v < 1e-8)


@pytest.mark.parametrize("m", ["text", "image"])
def test_delta_and_plan_shares(s4, m):
    delta, initial = s4[f"{m}_delta"], s4[f"{m}_delta_initial"]
    change = np.linalg.norm(delta - initial) / np.linalg.norm(initial)
    assert s4[f"{m}_delta_change"] == pytest.approx(change, rel=1e-5)
    assert s4[f"{m}_delta_change"] > 0.005  # it moved
    assert 1 / 3 < s4[f"{m}_share_dim"] < 3  # "similar sizes"
    assert s4[f"{m}_share_one"] == pytest.approx(s4[f"{m}_share_dim"] / s4["rec_dim"])
    assert s4[f"{m}_share_one"] < 0.2  # "almost all of aligned_m" is Delta's
