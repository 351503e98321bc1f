"""`recgoat_loss`: the distribution-level OT branch (the first `ot_rows` rows of the batch,
padded rows left out, each modality against the ID embeddings, averaged over modalities) and
the contrastive terms over distinct rows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recgoat_jax.models.base import Batch
from recgoat_jax.models.recgoat import LossOptions, recgoat_loss
from tests.conftest import np_entropic_ot, np_sinkhorn_divergence

N_USERS, N_ITEMS, DIM, B = 7, 30, 4, 12
EPSILON = 0.2  # Sinkhorn converges in a few hundred steps (the loss runs 50 of them)


@pytest.fixture(scope="module")
def problem():
    """A forward pass's outputs (random tables) and a batch whose rows 3, 6, 10, 11 are padding."""
    rng = np.random.default_rng(3)
    table = lambda n: rng.normal(size=(n, DIM)).astype(np.float32)  # noqa: E731
    out = {"z_user": table(N_USERS), "z_item": table(N_ITEMS), "z_item_cf": table(N_ITEMS),
           "z_modal": {"image": table(N_ITEMS) + 1.0, "text": table(N_ITEMS) - 0.5},
           "ids": {"embedding_user": table(N_USERS), "embedding_item": table(N_ITEMS)}}
    mask = np.ones(B, bool)
    mask[[3, 6, 10, 11]] = False
    batch = Batch(users=rng.integers(0, N_USERS, B), pos=rng.permutation(N_ITEMS)[:B],
                  neg=rng.integers(0, N_ITEMS, B), mask=mask)
    return out, batch


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["sinkhorn_divergence", "entropic"])
@pytest.mark.parametrize("ot_rows", [8, 0])
def test_ot_term_is_the_mean_over_modalities_on_the_kept_rows(problem, kind, ot_rows):
    out, batch = problem
    options = LossOptions(decay=1e-3, contrastive="none", cl_weight=0.0, modality_weight=0.5,
                          temperature=0.2, infonce_block=0, infonce_distinct=True,
                          ot_loss=kind, ot_weight=0.7, ot_epsilon=EPSILON, ot_rows=ot_rows)
    jax_out = {k: ({m: jnp.asarray(v) for m, v in x.items()} if isinstance(x, dict)
                   else jnp.asarray(x)) for k, x in out.items()}
    total, terms = recgoat_loss(options, jax_out, Batch(*(jnp.asarray(x) for x in batch)))
    n = ot_rows or B
    items = batch.pos[:n][batch.mask[:n]]  # the first n rows, padding dropped
    solve = np_sinkhorn_divergence if kind == "sinkhorn_divergence" else np_entropic_ot
    want = np.mean([solve(_unit(z[items]), _unit(out["z_item_cf"][items]), EPSILON)
                    for z in out["z_modal"].values()])
    # float32 and ot_loss's fixed 50 Sinkhorn iterations against the converged float64 value
    np.testing.assert_allclose(float(terms["ot"]), want, rtol=1e-3)
    rest = float(terms["bpr"]) + 1e-3 * float(terms["reg"])
    np.testing.assert_allclose(float(total) - rest, 0.7 * want, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("contrastive", ["reference", "cmcl"])
def test_contrastive_terms_over_distinct_rows_equal_those_over_every_row(problem, contrastive):
    """loss.infonce_distinct: the same loss and gradients for every table (the batch of 12
    repeats users out of 7, and positive items out of 5)."""
    out, batch = problem
    positives = np.random.default_rng(8).integers(0, 5, B)
    batch = Batch(*(jnp.asarray(x) for x in batch._replace(pos=positives)))
    tables = {k: v for k, v in out.items() if k != "ids"}

    def loss(tables, distinct):
        options = LossOptions(decay=1e-3, contrastive=contrastive, cl_weight=0.4,
                              modality_weight=0.5, temperature=0.2, infonce_block=0,
                              infonce_distinct=distinct, ot_loss="none", ot_weight=0.0,
                              ot_epsilon=EPSILON, ot_rows=0)
        jax_out = {**tables, "ids": {k: jnp.asarray(v) for k, v in out["ids"].items()}}
        return recgoat_loss(options, jax_out, batch)[0]

    tables = jax.tree.map(jnp.asarray, tables)
    want, want_grads = jax.value_and_grad(loss)(tables, False)
    got, got_grads = jax.value_and_grad(loss)(tables, True)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    for g, w in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
        np.testing.assert_allclose(g, w, atol=1e-6)
