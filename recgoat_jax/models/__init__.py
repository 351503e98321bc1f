"""Recommenders. Each is a `Recommender` (init, loss, embed, inputs): the training loop does not
know which one it runs. `build_model(cfg, dataset)` picks one by `cfg.model.name`."""

from recgoat_jax.models.base import Batch, Recommender
from recgoat_jax.models.registry import build_model

__all__ = ["Batch", "Recommender", "build_model"]
