"""Inputs of the port: interactions and features as torch tensors, and model construction.

`ReferenceData` holds what the reference's `Loader` holds (training pairs in order, each user's
training and test items, item features); `build_model` builds the graphs from it exactly as the
reference does and returns `lgn` or `lgn_mm`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .graph import item_knn_graph, normalized_adjacency
from .model import LightGCN, MultiModalLightGCN, ReferenceConfig


@dataclasses.dataclass(frozen=True)
class ReferenceData:
    """Interactions and features for the port (host-side).

    Attributes:
      n_users, n_items: U and I.
      train_users, train_items: [N] int64 CPU tensors, the training pairs in the reference's order.
      test_pairs: [T, 2] int64 numpy (user, item) pairs used for evaluation (may be empty).
      item_features: {"text": [I, f_t], "image": [I, f_i]} float32 numpy; either may be absent.
    """

    n_users: int
    n_items: int
    train_users: torch.Tensor
    train_items: torch.Tensor
    test_pairs: np.ndarray
    item_features: dict[str, np.ndarray]

    @classmethod
    def from_arrays(cls, n_users: int, n_items: int, train_pairs: np.ndarray,
                    test_pairs: np.ndarray | None = None,
                    item_features: dict[str, np.ndarray] | None = None) -> "ReferenceData":
        """train_pairs, test_pairs: [N, 2] integer (user, item) arrays."""
        train_pairs = np.asarray(train_pairs, dtype=np.int64).reshape(-1, 2)
        test_pairs = np.zeros((0, 2), np.int64) if test_pairs is None else \
            np.asarray(test_pairs, dtype=np.int64).reshape(-1, 2)
        for field, pairs in (("train_pairs", train_pairs), ("test_pairs", test_pairs)):
            if len(pairs) and (pairs[:, 0].min() < 0 or pairs[:, 0].max() >= n_users
                               or pairs[:, 1].min() < 0 or pairs[:, 1].max() >= n_items):
                raise ValueError(f"{field}: ids out of range for {n_users} users, {n_items} items")
        features = {name: np.asarray(x, dtype=np.float32)
                    for name, x in (item_features or {}).items()}
        for name, x in features.items():
            if x.ndim != 2 or x.shape[0] != n_items:
                raise ValueError(f"item_features['{name}'] has shape {x.shape}: expected "
                                 f"[{n_items}, dim]")
        return cls(n_users, n_items, torch.from_numpy(train_pairs[:, 0].copy()),
                   torch.from_numpy(train_pairs[:, 1].copy()), test_pairs, features)

    @classmethod
    def from_dataset(cls, dataset, split: str = "test") -> "ReferenceData":
        """From a `recgoat_jax.data.Dataset`; `split` ("test" or "valid") is what `evaluate` ranks."""
        return cls.from_arrays(dataset.n_users, dataset.n_items, dataset.train,
                               getattr(dataset, split), dataset.item_features)


def build_model(name: str, data: ReferenceData, config: ReferenceConfig = ReferenceConfig(),
                knn_k: int = 20, seed: int | None = None) -> torch.nn.Module:
    """Build graphs and model `name` ("lgn" or "lgn_mm") on the CPU; move it with `.to(device)`.

    Args:
      knn_k: `item_knn_k` (20 Baby / Electronics, 30 Sports).
      seed: if given, parameters are initialised from `torch.manual_seed(seed)` inside a forked
        RNG (the global RNG is left as it was); the reference draws them in the same order.
    """
    if name not in ("lgn", "lgn_mm"):
        raise ValueError(f"unknown model '{name}': expected 'lgn' or 'lgn_mm'")
    adjacency = normalized_adjacency(data.train_users, data.train_items, data.n_users, data.n_items)
    features = {m: torch.from_numpy(data.item_features[m]) if m in data.item_features else None
                for m in ("text", "image")}
    knn = {m: None if x is None else item_knn_graph(x, knn_k) for m, x in features.items()}
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        if name == "lgn":
            return LightGCN(data.n_users, data.n_items, adjacency, config)
        return MultiModalLightGCN(data.n_users, data.n_items, adjacency, features["text"],
                                  features["image"], knn["text"], knn["image"], config)
