"""experiments/plan_marginal_error.py solves each cost with the config's own ott options, so
its pages measure the solve a run would do (cost_norm included)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from recgoat_jax import config as C
from recgoat_jax.ot.plan import ott_output, plan_diagnostics


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("experiments/plan_marginal_error.py", "plan_marginal_error")


def test_the_solve_keeps_the_configs_ott_options(script):
    oat = C.load("recgoat-paper", ["model.oat.cost_norm=mean", "model.oat.momentum=1.2"]).model.oat
    options = script.base_options(oat)
    assert (options.solver, options.plan_grad) == ("ott", "stop")  # a measurement, no gradient
    assert (options.cost_norm, options.momentum, options.epsilon, options.threshold,
            options.plan_scale) == ("mean", 1.2, oat.epsilon, oat.threshold, oat.plan_scale)
    reference = C.load("recgoat-reference").model.oat  # kernel solver: only epsilon carries over
    options = script.base_options(reference)
    assert (options.solver, options.epsilon, options.plan_scale, options.cost_norm) == (
        "ott", reference.epsilon, reference.plan_scale, "none")


@pytest.mark.parametrize("spread", [1e2, 1e4])
def test_cost_norm_mean_keeps_a_wide_cost_on_its_marginals(script, spread):
    # a [64, 64] cost spanning 1e4-1e6 epsilon: 500 plain iterations leave the plan far off its
    # marginals; relative to the cost's mean the same budget converges (measured: <= 3e-3)
    cost = jnp.asarray(np.random.default_rng(0).uniform(0, spread, (64, 64)), jnp.float32)
    oat = C.load("recgoat", []).model.oat
    errors = {}
    for norm in ("none", "mean"):
        options = dataclasses.replace(script.base_options(dataclasses.replace(oat, cost_norm=norm)),
                                      iterations=500, min_iterations=500)
        plan = ott_output(cost, options).matrix * 64
        errors[norm] = float(plan_diagnostics(plan, "dim")["relative_error"])
    assert errors["none"] > 0.1 and errors["mean"] < 1e-2, errors
