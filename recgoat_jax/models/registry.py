"""`build_model`: from a config and a dataset to a `Recommender`."""

from __future__ import annotations

from recgoat_jax.config import RunConfig
from recgoat_jax.data import Dataset
from recgoat_jax.models.base import Recommender


def build_model(cfg: RunConfig, dataset: Dataset) -> Recommender:
    name = cfg.model.name
    if name == "popularity":
        from recgoat_jax.models.popularity import build_popularity
        return build_popularity(dataset)
    if name == "mf":
        from recgoat_jax.models.lightgcn import build_mf
        return build_mf(cfg, dataset)
    if name == "lightgcn":
        from recgoat_jax.models.lightgcn import build_lightgcn
        return build_lightgcn(cfg, dataset)
    if name == "recgoat":
        from recgoat_jax.models.recgoat import build_recgoat
        return build_recgoat(cfg, dataset)
    raise ValueError(f"model.name must be one of popularity, mf, lightgcn, recgoat; got {name!r}")
