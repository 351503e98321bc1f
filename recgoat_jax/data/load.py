"""One entry point from a `DataConfig` to a `Dataset`: a synthetic preset or a reader."""

from __future__ import annotations

from pathlib import Path

from recgoat_jax.config import ConfigError, DataConfig
from recgoat_jax.data import readers, synthetic
from recgoat_jax.data.dataset import DataError, Dataset

FORMATS = ("", "mmrec", "lightgcn", "recbole")


def load_dataset(cfg: DataConfig) -> Dataset:
    """The dataset `cfg` describes.

    ``cfg.format`` "" generates synthetic preset ``cfg.preset`` (with ``cfg.seed`` and the
    signal overrides, < 0 meaning the preset's); "mmrec" / "lightgcn" / "recbole" read the
    folder ``cfg.path`` (``cfg.name`` selects ``<name>.inter``; RecBole splits with ``cfg.seed``).

    Raises:
      ConfigError: unknown format or preset, or a reader format without ``data.path``.
      DataError: a missing folder or bad files (see `readers`).
    """
    if cfg.format not in FORMATS:
        raise ConfigError(f"data.format = '{cfg.format}': expected one of "
                          f"{[f for f in FORMATS if f]} (or \"\" for a synthetic preset)")
    if not cfg.format:
        if cfg.preset not in synthetic.PRESETS:
            raise ConfigError(f"data.preset = '{cfg.preset}': expected one of "
                              f"{list(synthetic.PRESETS)}")
        return synthetic.generate(cfg.preset, seed=cfg.seed, feature_signal=cfg.feature_signal,
                                  text_signal=cfg.text_signal)
    if not cfg.path:
        raise ConfigError(f"data.path is empty: data.format = '{cfg.format}' reads a folder")
    if not Path(cfg.path).is_dir():
        raise DataError(f"data.path = '{cfg.path}': folder not found")
    name = cfg.name or None
    if cfg.format == "mmrec":
        return readers.read_mmrec(cfg.path, name)
    if cfg.format == "lightgcn":
        return readers.read_lightgcn(cfg.path)
    return readers.read_recbole(cfg.path, name, seed=cfg.seed)
