"""What every model is to the training loop and the evaluator."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

Params = Any  # a pytree of arrays
Inputs = Any  # a pytree of arrays: graphs, features (built once on host, passed to jit)


class Batch(NamedTuple):
    """One training batch of static size B.

    users, pos, neg: [B] int32 ids; mask: [B] bool, False on the padding of the last batch.
    """

    users: jax.Array
    pos: jax.Array
    neg: jax.Array
    mask: jax.Array


@dataclasses.dataclass(frozen=True)
class Recommender:
    """A model as pure functions plus the arrays they read.

    init(key) -> params
    loss(params, inputs, batch, key) -> (scalar loss, {term name: scalar})  # train mode (dropout)
    embed(params, inputs) -> (z_user [U, d], z_item [I, d])  # eval mode; scores are dot products
    inputs: the data pytree (graphs, features) passed to every call, never closed over, so large
      arrays are arguments of the compiled functions rather than constants baked into them.
    trainable: False for models with nothing to learn (popularity).
    diagnostics(params) -> {name: scalar}: optional, what a model wants plotted beside its
      loss terms (RecGOAT: ``fusion_weight_<m>`` per modality, ``user_gate_share`` with the
      user side on); pure, cheap, jit-able. None when the model has nothing to report.
    hyper: the continuous hyperparameters `loss_with` and `init_with` accept, as
      {config key: this model's value}, e.g. {"loss.decay": 1e-4}; a sweep trains members
      that differ only in these as one program (`recgoat_jax.sweep`).
    loss_with(values) -> a loss function like `loss`, reading the hyperparameters in `values`
      ({key: scalar}, jax arrays allowed: traced per member) instead of `hyper`'s.
    init_with(params, values) -> params with the initial values that `values` set (e.g. the
      fusion weights' starting values); the identity for keys it does not hold.
    embed_with(values) -> an embed function reading `values` (None: `embed` does not depend on
      any of `hyper`).
    layout: under ``train.sharding = "graph"``, the `recgoat_jax.graph.partition.NodeLayout`
      of the ID tables: `init` returns them padded to the partitioned rows and the training
      loop shards them (and their optimiser moments) by rows; `embed` still returns [U, d]
      and [I, d]. None: every array replicated.
    """

    name: str
    init: Callable[[jax.Array], Params]
    loss: Callable[[Params, Inputs, Batch, jax.Array], tuple[jax.Array, dict]]
    embed: Callable[[Params, Inputs], tuple[jax.Array, jax.Array]]
    inputs: Inputs
    trainable: bool = True
    diagnostics: Callable[[Params], dict[str, jax.Array]] | None = None
    hyper: Mapping[str, float] = dataclasses.field(default_factory=dict)
    loss_with: Callable[[Mapping[str, Any]], Callable] | None = None
    init_with: Callable[[Params, Mapping[str, Any]], Params] | None = None
    embed_with: Callable[[Mapping[str, Any]], Callable] | None = None
    layout: Any = None


PRECISIONS = {"f32": jnp.float32, "bf16": jnp.bfloat16}


def compute_dtype(precision: str):
    """The operand dtype of the dense matmuls for a precision name ("f32" | "bf16").

    Parameters and optimizer state are float32 either way; matmuls accumulate in float32.
    Raises ValueError on any other name.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[precision]


def traced_hyper_keys(model: Recommender, members: list[Mapping[str, float]]) -> list[str]:
    """The hyperparameters a compiled program takes as arguments instead of constants.

    `members`: each member's {config key: value} (a solo run is a group of one). Every key of
    `model.hyper` is traced unless it is 0 for every member: a zero dropout rate or loss weight
    stays a constant, so its layer or term keeps its cheap path. Solo runs and sweep members
    trace the same keys, so a sweep member compiles exactly its solo run's program (XLA folds
    constants and traced scalars into different roundings, and training amplifies them).
    """
    if model.loss_with is None:
        return []
    return [k for k in model.hyper if any(float(m[k]) != 0.0 for m in members)]


def with_hyper(model: Recommender, values: Mapping[str, Any]) -> Recommender:
    """`model` whose loss and embed read the hyperparameters in `values` ({key: scalar},
    traced allowed); `model` itself when `values` is empty."""
    if not values:
        return model
    return dataclasses.replace(
        model, loss=model.loss_with(values),
        embed=model.embed_with(values) if model.embed_with else model.embed)


def init_params(model: Recommender, key: jax.Array, values: Mapping[str, Any]) -> Params:
    """`model.init(key)`, with the initial values that `values` sets (`init_with`)."""
    params = model.init(key)
    if values and model.init_with is not None:
        params = model.init_with(params, values)
    return params
