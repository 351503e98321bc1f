"""The dataset container every reader and the synthetic generator return.

Host-side numpy, validated once on construction; everything downstream (graphs, training,
evaluation) trusts it.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np


class DataError(ValueError):
    """Bad input data. The message names the file, line or field and what was expected."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Interactions split into train / valid / test, plus side features.

    Attributes:
      name: short name (``"small"``, ``"baby"``, ``"ml-100k"``...).
      n_users: U; user ids are 0..U-1.
      n_items: I; item ids are 0..I-1.
      train, valid, test: ``[N_split, 2]`` int32 arrays of (user, item) pairs, unique within
        and across splits. ``valid`` / ``test`` may be empty.
      item_features: ``{modality: float32 [I, f_m]}``, e.g. ``{"text": ..., "image": ...}``.
        Row r describes item r.
      user_features: ``{name: float32 [U, f]}`` (e.g. encoded LLM user profiles), maybe empty.
      source: where the data came from (a path, or ``"synthetic:<preset>"``).
      raw_user_ids, raw_item_ids: the original id tokens (``[U]`` / ``[I]`` str arrays) when a
        reader remapped them to dense ids (RecBole); ``None`` when ids were already dense.
    """

    name: str
    n_users: int
    n_items: int
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    item_features: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    user_features: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    source: str = ""
    raw_user_ids: np.ndarray | None = None
    raw_item_ids: np.ndarray | None = None

    def __post_init__(self):
        validate(self)

    def stats(self) -> dict:
        """Counts a `data stats` command prints: users, items, interactions, sparsity, features."""
        n_inter = len(self.train) + len(self.valid) + len(self.test)
        return {
            "name": self.name,
            "source": self.source,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": n_inter,
            "train": len(self.train),
            "valid": len(self.valid),
            "test": len(self.test),
            "sparsity": 1.0 - n_inter / float(self.n_users * self.n_items),
            "item_features": {k: int(v.shape[1]) for k, v in self.item_features.items()},
            "user_features": {k: int(v.shape[1]) for k, v in self.user_features.items()},
        }


def _check_pairs(field: str, pairs: np.ndarray, n_users: int, n_items: int, where: str) -> None:
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise DataError(f"{where}: field '{field}' must be an [N, 2] array of (user, item), "
                        f"got shape {pairs.shape}")
    if not np.issubdtype(pairs.dtype, np.integer):
        raise DataError(f"{where}: field '{field}' must hold integer ids, got {pairs.dtype}")
    if len(pairs) == 0:
        return
    for col, name, n in ((0, "user", n_users), (1, "item", n_items)):
        ids = pairs[:, col]
        bad = np.flatnonzero((ids < 0) | (ids >= n))
        if bad.size:
            raise DataError(f"{where}: {name} id {int(ids[bad[0]])} in '{field}' row {int(bad[0])} "
                            f"is out of range: expected 0 <= id < {n}")


def _pair_keys(pairs: np.ndarray, n_items: int) -> np.ndarray:
    return pairs[:, 0].astype(np.int64) * n_items + pairs[:, 1].astype(np.int64)


def validate(ds: Dataset) -> None:
    """Raise DataError naming the field and the problem; see the class docstring for the contract."""
    where = ds.source or ds.name
    if ds.n_users <= 0 or ds.n_items <= 0:
        raise DataError(f"{where}: n_users and n_items must be positive, got "
                        f"{ds.n_users} and {ds.n_items}")
    for field in ("train", "valid", "test"):
        _check_pairs(field, getattr(ds, field), ds.n_users, ds.n_items, where)
    if len(ds.train) == 0:
        raise DataError(f"{where}: the training split is empty: expected at least one "
                        "(user, item) pair with x_label 0 / in train.txt")
    keys = {f: _pair_keys(getattr(ds, f), ds.n_items) for f in ("train", "valid", "test")}
    for f, k in keys.items():
        if len(np.unique(k)) != len(k):
            raise DataError(f"{where}: split '{f}' holds the same (user, item) pair twice")
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        both = np.intersect1d(keys[a], keys[b])
        if both.size:
            u, i = divmod(int(both[0]), ds.n_items)
            raise DataError(f"{where}: the pair (user {u}, item {i}) is in both '{a}' and "
                            f"'{b}' ({both.size} such pairs): a pair belongs to one split")
    for kind, feats, n in (("item", ds.item_features, ds.n_items),
                           ("user", ds.user_features, ds.n_users)):
        for name, x in feats.items():
            field = f"{kind}_features['{name}']"
            if x.ndim != 2 or x.shape[0] != n:
                raise DataError(f"{where}: {field} has shape {x.shape}: expected "
                                f"[{n} ({kind}s), dim] with row r describing {kind} r")
            if x.shape[1] == 0:
                file = f"{'user_' if kind == 'user' else ''}{name}_feat.npy"
                raise DataError(f"{where}: {field} ({file}) has shape {x.shape}: expected at "
                                "least one feature column")
            if x.dtype != np.float32:
                raise DataError(f"{where}: {field} has dtype {x.dtype}: expected float32")
            finite = np.isfinite(x)
            if not finite.all():
                r, c = np.argwhere(~finite)[0]
                raise DataError(f"{where}: {field} holds NaN/Inf (first at row {r}, column {c})")


def drop_cold_eval_users(name: str, n_users: int, train: np.ndarray,
                         split: np.ndarray, where: str) -> np.ndarray:
    """Drop valid/test pairs of users with no training item, with a counted warning (as MMRec)."""
    has_train = np.zeros(n_users, dtype=bool)
    has_train[train[:, 0]] = True
    keep = has_train[split[:, 0]] if len(split) else np.zeros(0, dtype=bool)
    if len(split) and not keep.all():
        n_users_dropped = len(np.unique(split[~keep, 0]))
        warnings.warn(f"{where}: dropped {int((~keep).sum())} '{name}' pairs of "
                      f"{n_users_dropped} users who have no training item", stacklevel=2)
    return split[keep] if len(split) else split
