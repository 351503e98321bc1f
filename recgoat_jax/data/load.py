"""One entry point from a `DataConfig` to a `Dataset`: a synthetic preset or a reader; the
format of a folder detected from its files; where the data came from, for result.json."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from recgoat_jax.config import ConfigError, DataConfig, RunConfig
from recgoat_jax.data import readers, synthetic
from recgoat_jax.data.dataset import DataError, Dataset

FORMATS = ("", "mmrec", "lightgcn", "recbole")


def detect_format(path: str | Path, name: str = "") -> str:
    """"mmrec", "lightgcn" or "recbole" from the files in folder `path`.

    LightGCN: a ``train.txt``. MMRec / RecBole: a ``<name>.inter`` (the only one if `name` is
    empty) whose header has typed fields (``user_id:token``: RecBole) or ``x_label`` (MMRec).
    Raises DataError naming the folder or file when none of these fits.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"data.path = '{path}': folder not found")
    inter = sorted(folder.glob(f"{name or '*'}.inter"))
    if (folder / "train.txt").is_file() and not inter:
        return "lightgcn"
    if len(inter) != 1:
        what = f"{len(inter)} .inter files ({', '.join(p.name for p in inter)})" if inter \
            else "no train.txt and no .inter file"
        raise DataError(f"data.path = '{path}': cannot tell the data format: {what}; set "
                        "--data-format (mmrec | lightgcn | recbole)" +
                        (" or --data-name" if len(inter) > 1 else ""))
    with open(inter[0], encoding="utf-8", errors="replace") as f:
        header = f.readline().rstrip("\n").split("\t")
    if any(":" in field for field in header):
        return "recbole"
    if readers.MMREC_COLUMNS["split"] in header:
        return "mmrec"
    raise DataError(f"{inter[0]}:1: cannot tell the data format from the header {header}: "
                    "expected typed RecBole fields (user_id:token ...) or MMRec's x_label; set "
                    "--data-format")


def resolve_data(cfg: RunConfig) -> RunConfig:
    """`cfg` with ``data.path`` absolute and, when ``data.format`` is empty but a path is given,
    the format detected from the files (so config.toml says exactly what was read)."""
    data = cfg.data
    if not data.path:
        return cfg
    path = str(Path(data.path).expanduser().resolve())
    fmt = data.format or detect_format(path, data.name)
    return dataclasses.replace(cfg, data=dataclasses.replace(data, path=path, format=fmt))


def load_dataset(cfg: DataConfig) -> Dataset:
    """The dataset `cfg` describes.

    ``cfg.format`` "" generates synthetic preset ``cfg.preset`` (with ``cfg.seed`` and the
    signal overrides, < 0 meaning the preset's); "mmrec" / "lightgcn" / "recbole" read the
    folder ``cfg.path`` (``cfg.name`` selects ``<name>.inter``; RecBole splits with ``cfg.seed``).

    Raises:
      ConfigError: unknown format or preset, a reader format without ``data.path``.
      DataError: a missing folder or bad files (see `readers`).
    """
    if cfg.format not in FORMATS:  # a DataConfig built in code skips config.load's checks
        raise ConfigError(f"data.format = '{cfg.format}': expected one of "
                          f"{[f for f in FORMATS if f]} (or \"\" for a synthetic preset)")
    if not cfg.format:
        if cfg.preset not in synthetic.PRESETS:
            raise ConfigError(f"data.preset = '{cfg.preset}': expected one of "
                              f"{list(synthetic.PRESETS)}")
        if cfg.path:
            raise ConfigError(f"data.path = '{cfg.path}' but data.format is empty: resolve the "
                              "format first (recgoat_jax.data.load.resolve_data)")
        return synthetic.generate(cfg.preset, seed=cfg.seed, feature_signal=cfg.feature_signal,
                                  text_signal=cfg.text_signal, user_features=cfg.user_features)
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


def data_source(cfg: DataConfig) -> dict:
    """Where the data came from, for result.json: the preset and its generation settings, or
    the absolute folder, format and the SHA-256 of each interaction file."""
    if not cfg.format:
        return {"kind": "synthetic", "preset": cfg.preset, "seed": cfg.seed,
                "feature_signal": cfg.feature_signal, "text_signal": cfg.text_signal,
                "user_features": cfg.user_features}
    folder = Path(cfg.path)
    patterns = ("train.txt", "valid.txt", "test.txt") if cfg.format == "lightgcn" \
        else (f"{cfg.name or '*'}.inter",)
    files = sorted(p for pattern in patterns for p in folder.glob(pattern) if p.is_file())
    return {"kind": "files", "format": cfg.format, "path": str(folder.absolute()),
            "name": cfg.name, "seed": cfg.seed,
            "sha256": {p.name: _sha256(p) for p in files}}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
