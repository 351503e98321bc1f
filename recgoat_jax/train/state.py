"""The whole training state as one pytree (what a checkpoint holds)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from recgoat_jax.config import TrainConfig


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    key: jax.Array  # consumed one split per epoch: shuffle, negatives, dropout
    epoch: jax.Array  # [] int32, epochs completed


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """Adam, no weight decay, no schedule (the reference). torch's Adam eps is 1e-8 as optax's.

    The learning rate lives in the optimizer state (`optax.inject_hyperparams`): a sweep gives
    each member its own, and a solo run then compiles exactly a sweep member's program (a
    constant learning rate is folded into other roundings than a traced one).
    """
    return optax.inject_hyperparams(optax.adam)(learning_rate=cfg.lr)


def init_state(params, optimizer: optax.GradientTransformation, key: jax.Array) -> TrainState:
    return TrainState(params=params, opt_state=optimizer.init(params), key=key,
                      epoch=jnp.zeros((), jnp.int32))
