"""Checks of a config against the dataset it will train on, made before any training starts.

`config.load` has already checked every value on its own; what is left needs the data: the
neighbour counts against the number of items / users, the feature files a model reads, the
splits the evaluation protocol selects and reports on.
"""

from __future__ import annotations

from recgoat_jax.config import ConfigError, RunConfig
from recgoat_jax.data import Dataset


GRAPH_SHARDED_MODELS = ("lightgcn", "mf", "recgoat")  # models whose state train.sharding='graph' splits


def check_run(cfg: RunConfig, dataset: Dataset) -> None:
    """ConfigError naming the setting when `cfg` cannot run on `dataset`.

    The rule for valid interactions: the mmrec protocol selects the model on valid, so it
    needs some; the reference protocol selects on test and needs test ones.
    """
    m, where = cfg.model, dataset.source or dataset.name
    if m.name == "recgoat":
        if not dataset.item_features:
            raise ConfigError(f"model.name = 'recgoat' needs item feature files (e.g. "
                              f"text_feat.npy, image_feat.npy), but {where} has none: add them, "
                              "or train lightgcn / mf")
        unknown = [x for x in m.modalities if x not in dataset.item_features]
        if unknown:
            raise ConfigError(f"model.modalities names {unknown}, but {where} has item features "
                              f"{sorted(dataset.item_features)}")
        if m.knn_k >= dataset.n_items:
            raise ConfigError(f"model.knn_k = {m.knn_k} must be smaller than the number of "
                              f"items ({dataset.n_items} in {where})")
        if m.user_side and dataset.user_features and m.user_knn_k >= dataset.n_users:
            raise ConfigError(f"model.user_knn_k = {m.user_knn_k} must be smaller than the "
                              f"number of users ({dataset.n_users} in {where})")
    if cfg.train.sharding == "graph" and m.name not in GRAPH_SHARDED_MODELS:
        raise ConfigError(f"train.sharding = 'graph' partitions the tables and graphs of "
                          f"{', '.join(GRAPH_SHARDED_MODELS)}; model.name = '{m.name}' "
                          "runs with train.sharding = 'data'")
    protocol = cfg.eval.protocol
    needed = "valid" if protocol == "mmrec" else "test"
    if not len(getattr(dataset, needed)):
        hint = ("add valid interactions (x_label 1 in MMRec files, valid.txt for LightGCN), or "
                "set eval.protocol=reference (it selects on test, and says so)"
                if needed == "valid" else "add test interactions")
        raise ConfigError(f"eval.protocol = '{protocol}' selects on {needed} interactions, but "
                          f"{where} has none: {hint}")


def step_batch_size(batch_size: int, n_train: int, n_devices: int) -> int:
    """The batch a step really uses: `batch_size`, or fewer rows when the training set is
    smaller (rounded up to a multiple of the device count), so a toy set is not padded to
    thousands of masked rows."""
    if batch_size <= n_train:
        return batch_size
    return -(-n_train // n_devices) * n_devices
