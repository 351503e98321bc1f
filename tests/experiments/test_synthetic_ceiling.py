"""experiments/synthetic_ceiling.py: the planted-model ceiling (ranked with the models' own
masking) and the modalities' probes."""

import jax.numpy as jnp
import numpy as np
import pytest

from recgoat_jax.config import EvalConfig
from recgoat_jax.train.loop import make_evaluators


@pytest.fixture(scope="module")
def ceiling(load_script):
    return load_script("experiments/synthetic_ceiling.py", "synthetic_ceiling")


def test_ceiling_runs_on_the_tiny_preset(ceiling, capsys):
    ceiling.main(["--preset", "tiny"])
    out = capsys.readouterr().out
    recall = float(out.split("recall@20 ")[1].split()[0].rstrip(","))
    assert 0.0 < recall <= 1.0
    assert "item text" in out and "user text" in out
    assert "user training-history factors" in out


def test_ceiling_masks_exactly_what_the_models_test_evaluator_masks(ceiling, tiny):
    """Scores that put every user's VALID items first, then the test items: with the models'
    masking (training items only) the valid items take the top ranks, so hit@1 is 0 for every
    user with a valid item; masking train + valid would make it 1."""
    scores = np.zeros((tiny.n_users, tiny.n_items), np.float32)
    scores[tiny.test[:, 0], tiny.test[:, 1]] = 1.0
    scores[tiny.valid[:, 0], tiny.valid[:, 1]] = 2.0
    z_user, z_item = jnp.asarray(scores), jnp.eye(tiny.n_items)  # <z_user[u], z_item[i]> = s[u, i]
    ks = (1, 5, 20)
    ours = ceiling.ceiling_evaluator(tiny, ks)
    models = make_evaluators(tiny, EvalConfig(ks=ks), None)["test"]
    np.testing.assert_array_equal(ours.eval_user_ids, models.eval_user_ids)
    got, want = ours.per_user_metrics(z_user, z_item), models.per_user_metrics(z_user, z_item)
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    with_valid = np.isin(ours.eval_user_ids, tiny.valid[:, 0])
    assert with_valid.any() and (got["hit@1"][with_valid] == 0).all()
