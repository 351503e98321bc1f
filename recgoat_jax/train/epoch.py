"""One training epoch as ONE compiled function.

The shuffle, the negatives (uniform over all items, positives not excluded, as the reference)
and the dropout keys are drawn on device; the epoch is a `lax.scan` over [n_batches, B] index
arrays, and the last partial batch is padded and masked so every step has the same shape.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from recgoat_jax.models.base import Batch, Recommender
from recgoat_jax.train.state import TrainState


def n_batches(n_train: int, batch_size: int) -> int:
    return -(-n_train // batch_size)


def epoch_batches(key: jax.Array, n_train: int, n_items: int, batch_size: int):
    """Indices into the training pairs, masks and negatives for one epoch.

    Returns idx [S, B] int32, mask [S, B] bool, neg [S, B] int32, step_keys [S] keys, with
    S = ceil(n_train / B).
    """
    k_perm, k_neg, k_drop = jax.random.split(key, 3)
    steps = n_batches(n_train, batch_size)
    total = steps * batch_size
    perm = jax.random.permutation(k_perm, n_train).astype(jnp.int32)
    idx = jnp.zeros((total,), jnp.int32).at[:n_train].set(perm).reshape(steps, batch_size)
    mask = (jnp.arange(total) < n_train).reshape(steps, batch_size)
    neg = jax.random.randint(k_neg, (steps, batch_size), 0, n_items, dtype=jnp.int32)
    return idx, mask, neg, jax.random.split(k_drop, steps)


def make_train_step(model: Recommender, optimizer: optax.GradientTransformation):
    """(params, opt_state, inputs, batch, key) -> (params, opt_state, loss, terms)."""
    grad_fn = jax.value_and_grad(model.loss, has_aux=True)

    def step(params, opt_state, inputs, batch: Batch, key):
        (loss, terms), grads = grad_fn(params, inputs, batch, key)
        with jax.named_scope("optimizer"):
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss, terms

    return step


def make_epoch_fn(model: Recommender, optimizer: optax.GradientTransformation,
                  n_items: int, batch_size: int, constrain=None):
    """Build `epoch(state, train_pairs [N, 2], inputs) -> (state, stats)` (jit it once).

    stats: {"loss": mean over batches, each loss term's mean, "finite": all steps finite}.
    `constrain(batch) -> batch`, if given, places each batch (data-parallel sharding).
    """
    step = make_train_step(model, optimizer)

    def epoch(state: TrainState, train_pairs: jax.Array, inputs):
        key, epoch_key = jax.random.split(state.key)
        idx, mask, neg, step_keys = epoch_batches(epoch_key, train_pairs.shape[0], n_items,
                                                  batch_size)

        def body(carry, xs):
            params, opt_state = carry
            idx_b, mask_b, neg_b, key_b = xs
            pairs = train_pairs[idx_b]
            batch = Batch(users=pairs[:, 0], pos=pairs[:, 1], neg=neg_b, mask=mask_b)
            if constrain is not None:
                batch = constrain(batch)
            params, opt_state, loss, terms = step(params, opt_state, inputs, batch, key_b)
            return (params, opt_state), (loss, terms)

        (params, opt_state), (loss, terms) = jax.lax.scan(
            body, (state.params, state.opt_state), (idx, mask, neg, step_keys))
        stats = {"loss": jnp.mean(loss), **{k: jnp.mean(v) for k, v in terms.items()},
                 "finite": jnp.all(jnp.isfinite(loss)) & jnp.all(jnp.stack(
                     [jnp.all(jnp.isfinite(v)) for v in terms.values()]))}
        return TrainState(params, opt_state, key, state.epoch + 1), stats

    return epoch
