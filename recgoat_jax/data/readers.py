"""Readers for the field's on-disk formats, each returning a validated `Dataset`.

* MMRec: ``<name>.inter`` (header ``userID itemID rating timestamp x_label``, any column order;
  x_label 0 / 1 / 2 = train / valid / test) plus ``*_feat.npy``.
* LightGCN: ``train.txt``, optional ``valid.txt``, ``test.txt``; lines ``user item item ...``
  plus ``*_feat.npy``.
* RecBole atomic files: ``<name>.inter`` with a typed header (``user_id:token`` ...), ids
  remapped to dense ints, split per user with `split.split_per_user`; optional ``<name>.item``.

Feature files in the folder: ``<m>_feat.npy`` is item modality ``m`` (``text_feat.npy`` ->
``"text"``), ``user_<m>_feat.npy`` is user feature ``m`` (``user_feat.npy`` -> ``"user"``).
Row r describes item (user) r. For MMRec and LightGCN, U = 1 + the largest user id and
I = 1 + the largest item id over all splits, unless the feature files have more rows (items or
users without interactions); every feature file must then have exactly that many rows.

Every problem raises `DataError` naming the file, the 1-based line and what was expected.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np

from recgoat_jax.data.dataset import DataError, Dataset, drop_cold_eval_users
from recgoat_jax.data.split import split_per_user
from recgoat_jax.data.text_formats import typed_header, typed_rows

SPLIT_NAMES = ("train", "valid", "test")
MMREC_COLUMNS = {"user": "userID", "item": "itemID", "split": "x_label"}
RECBOLE_USER_FIELD = "user_id"
RECBOLE_ITEM_FIELD = "item_id"
FEATURE_SUFFIX = "_feat.npy"


@dataclasses.dataclass
class _Records:
    """Parsed (user, item) pairs with where each came from. All arrays ``[N]`` int64."""

    users: np.ndarray
    items: np.ndarray
    splits: np.ndarray  # 0 train, 1 valid, 2 test
    lines: np.ndarray  # 1-based line in its file
    files: tuple[str, ...]  # file name of each split (the same file three times for MMRec)


# ----------------------------------------------------------------------------- small helpers

def _folder(path) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: data folder not found (expected a directory)")
    return folder


def _read_lines(file: Path) -> list[str]:
    if not file.is_file():
        raise DataError(f"{file}: file not found")
    raw = file.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # e.g. MovieLens titles; every byte string decodes
    return text.splitlines()


def _inter_file(folder: Path, name: str | None) -> Path:
    """``<name>.inter``; without a name the folder's name, else the only ``*.inter`` there."""
    if name:
        file = folder / f"{name}.inter"
        if not file.is_file():
            raise DataError(f"{file}: file not found (expected the interactions of '{name}')")
        return file
    if (folder / f"{folder.name}.inter").is_file():
        return folder / f"{folder.name}.inter"
    found = sorted(folder.glob("*.inter"))
    if len(found) == 1:
        return found[0]
    raise DataError(f"{folder}: expected {folder.name}.inter or exactly one *.inter file, found "
                    f"{[f.name for f in found]}; pass the dataset name")


def _parse_id(token: str, file: str, line: int, field: str) -> int:
    try:
        value = int(token)
    except ValueError:
        raise DataError(f"{file} line {line}: {field} is '{token}': expected an integer id"
                        ) from None
    if value < 0:
        raise DataError(f"{file} line {line}: {field} is {value}: expected an id >= 0")
    return value


def _dedupe_across_splits(rec: _Records) -> _Records:
    """Error on a pair in two splits; drop repeats of a pair within a split (counted warning)."""
    if len(rec.users) == 0:
        return rec
    key = rec.users * (int(rec.items.max()) + 1) + rec.items
    order = np.lexsort((rec.lines, rec.splits, key))
    same_pair = key[order][1:] == key[order][:-1]
    clash = same_pair & (rec.splits[order][1:] != rec.splits[order][:-1])
    if clash.any():
        j = int(np.flatnonzero(clash)[0])
        a, b = order[j], order[j + 1]
        sa, sb = int(rec.splits[a]), int(rec.splits[b])
        raise DataError(
            f"{rec.files[sa]} line {rec.lines[a]} and {rec.files[sb]} line {rec.lines[b]}: the "
            f"pair (user {rec.users[a]}, item {rec.items[a]}) is in both '{SPLIT_NAMES[sa]}' and "
            f"'{SPLIT_NAMES[sb]}' ({int(clash.sum())} such pairs): a pair belongs to one split")
    if same_pair.any():
        dropped = order[1:][same_pair]
        first = int(dropped[np.argmin(rec.lines[dropped])])
        warnings.warn(f"{rec.files[int(rec.splits[first])]}: dropped {len(dropped)} repeated "
                      f"(user, item) pairs (first at line {rec.lines[first]})", stacklevel=3)
        keep = np.ones(len(key), dtype=bool)
        keep[dropped] = False
        rec = _Records(rec.users[keep], rec.items[keep], rec.splits[keep], rec.lines[keep],
                       rec.files)
    return rec


# ----------------------------------------------------------------------------- features

def _feature_files(folder: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """``({modality: file}, {user feature: file})`` for the ``*_feat.npy`` files in `folder`."""
    item, user = {}, {}
    for file in sorted(folder.glob(f"*{FEATURE_SUFFIX}")):
        stem = file.name[: -len(FEATURE_SUFFIX)]
        if stem == "user":
            user["user"] = file
        elif stem.startswith("user_"):
            user[stem[len("user_"):]] = file
        elif stem:
            item[stem] = file
    return item, user


def _load_matrix(file: Path) -> np.ndarray:
    """A 2-D finite float feature matrix as float32 ``[rows, dim]``."""
    try:
        x = np.load(file, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{file}: not a readable .npy array ({e})") from None
    if x.ndim != 2:
        raise DataError(f"{file}: shape {x.shape}: expected a 2-D array [rows, dim]")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise DataError(f"{file}: dtype {x.dtype}: expected numbers")
    x = x.astype(np.float32, copy=False)
    finite = np.isfinite(x)
    if not finite.all():
        r, c = np.argwhere(~finite)[0]
        raise DataError(f"{file}: NaN/Inf at row {r}, column {c}: features must be finite")
    return x


def _attach_features(files: dict[str, Path], n_from_ids: int, kind: str,
                     largest_id_at: str, may_grow: bool) -> tuple[int, dict[str, np.ndarray]]:
    """Load one kind of features and settle the entity count.

    Args:
      files: ``{name: path}`` of the ``*_feat.npy`` files of `kind` ("item" or "user").
      n_from_ids: 1 + the largest id in the interactions.
      largest_id_at: where that id is (", at <file> line <n>" or ""), for messages.
      may_grow: the feature files may have more rows than the ids need (entities without
        interactions); otherwise the rows must equal `n_from_ids` (remapped ids).
    Returns:
      ``(n, {name: float32 [n, dim]})``.
    """
    feats = {name: _load_matrix(f) for name, f in files.items()}
    n = max([n_from_ids] + [len(x) for x in feats.values()]) if may_grow else n_from_ids
    for name, x in feats.items():
        if len(x) == n:
            continue
        if may_grow and len(x) < n_from_ids:
            raise DataError(f"{files[name]}: {len(x)} rows: expected one row per {kind}, {n} "
                            f"rows ({kind} ids go up to {n_from_ids - 1}{largest_id_at})")
        others = [files[k].name for k, v in feats.items() if len(v) == n]
        why = (f"as {others[0]}" if others else
               f"one per dense {kind} id, in the order of raw_{kind}_ids")
        raise DataError(f"{files[name]}: {len(x)} rows: expected {n} rows ({why})")
    return n, feats


def _build(name: str, source: str, rec: _Records, folder: Path, may_grow: bool,
           n_users: int | None = None, n_items: int | None = None,
           raw_user_ids=None, raw_item_ids=None) -> Dataset:
    """Features, entity counts, cold-user drop and the final `Dataset` from parsed records."""
    rec = _dedupe_across_splits(rec)
    train_mask = rec.splits == 0
    if not train_mask.any():
        raise DataError(f"{rec.files[0]}: no training (user, item) pair: the training split is "
                        "empty")

    def largest(ids: np.ndarray, n_from_ids: int | None) -> str:
        j = int(np.argmax(ids))
        if n_from_ids is not None and int(ids[j]) + 1 != n_from_ids:
            return ""  # the largest id is not in a pair (a LightGCN line holding a user alone)
        return f", at {rec.files[int(rec.splits[j])]} line {rec.lines[j]}"

    item_files, user_files = _feature_files(folder)
    n_items, item_features = _attach_features(
        item_files, n_items if n_items is not None else int(rec.items.max()) + 1, "item",
        largest(rec.items, n_items), may_grow)
    n_users, user_features = _attach_features(
        user_files, n_users if n_users is not None else int(rec.users.max()) + 1, "user",
        largest(rec.users, n_users), may_grow)

    pairs = np.stack([rec.users, rec.items], axis=1).astype(np.int32)
    train = pairs[train_mask]
    valid, test = (drop_cold_eval_users(SPLIT_NAMES[s], n_users, train, pairs[rec.splits == s],
                                        rec.files[s]) for s in (1, 2))
    return Dataset(name=name, n_users=n_users, n_items=n_items, train=train, valid=valid,
                   test=test, item_features=item_features, user_features=user_features,
                   source=source, raw_user_ids=raw_user_ids, raw_item_ids=raw_item_ids)


# ----------------------------------------------------------------------------- MMRec

def read_mmrec(path, name: str | None = None) -> Dataset:
    """Read an MMRec dataset folder.

    Args:
      path: folder holding ``<name>.inter`` and ``*_feat.npy``.
      name: dataset name; default the folder's name, or the only ``*.inter`` in it.
    Returns:
      `Dataset` with the file's split (x_label 0 / 1 / 2); valid / test pairs of users
      without a training pair are dropped with a warning.
    """
    folder = _folder(path)
    file = _inter_file(folder, name)
    lines = _read_lines(file)
    if not lines or not lines[0].strip():
        raise DataError(f"{file} line 1: expected a header naming the columns "
                        f"{list(MMREC_COLUMNS.values())}")
    header = lines[0].split()
    columns = {}
    for role, col in MMREC_COLUMNS.items():
        if col not in header:
            raise DataError(f"{file} line 1: header {header} has no '{col}' column: expected "
                            f"the columns {list(MMREC_COLUMNS.values())} (any order)")
        columns[role] = header.index(col)
    n_cols = len(header)
    iu, ii, ix = columns["user"], columns["item"], columns["split"]
    users, items, splits, line_nos = [], [], [], []
    for line_no, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != n_cols:
            raise DataError(f"{file.name} line {line_no}: {len(fields)} fields: expected "
                            f"{n_cols} ({' '.join(header)})")
        users.append(_parse_id(fields[iu], file.name, line_no, "userID"))
        items.append(_parse_id(fields[ii], file.name, line_no, "itemID"))
        label = fields[ix]
        if label not in ("0", "1", "2"):
            raise DataError(f"{file.name} line {line_no}: x_label is '{label}': expected 0 "
                            "(train), 1 (valid) or 2 (test)")
        splits.append(int(label))
        line_nos.append(line_no)
    rec = _Records(*(np.asarray(v, dtype=np.int64) for v in (users, items, splits, line_nos)),
                   files=(file.name,) * 3)
    return _build(file.stem, str(file), rec, folder, may_grow=True)


# ----------------------------------------------------------------------------- LightGCN

def _read_lightgcn_file(file: Path) -> tuple[list, list, list, int]:
    """Pairs of one ``user item item ...`` file; returns users, items, lines, largest user."""
    users, items, line_nos = [], [], []
    largest_user = -1
    for line_no, line in enumerate(_read_lines(file), start=1):
        fields = line.split()
        if not fields:
            continue
        user = _parse_id(fields[0], file.name, line_no, "user id")
        largest_user = max(largest_user, user)
        # dict.fromkeys drops duplicate items on a line, keeping their order (as the reference).
        for item in dict.fromkeys(fields[1:]):
            users.append(user)
            items.append(_parse_id(item, file.name, line_no, "item id"))
            line_nos.append(line_no)
    return users, items, line_nos, largest_user


def read_lightgcn(path) -> Dataset:
    """Read a LightGCN-format folder: ``train.txt``, optional ``valid.txt``, ``test.txt``.

    Each line is ``user item item ...`` with 0-based ids; a line may hold a user alone. Users
    on such lines still count towards U.
    """
    folder = _folder(path)
    files = ("train.txt", "valid.txt", "test.txt")
    parts = [[], [], [], []]  # users, items, splits, lines
    largest_user = -1
    for split, fname in enumerate(files):
        if fname == "valid.txt" and not (folder / fname).is_file():
            continue
        users, items, line_nos, top = _read_lightgcn_file(folder / fname)
        largest_user = max(largest_user, top)
        for acc, vals in zip(parts, (users, items, [split] * len(users), line_nos)):
            acc.extend(vals)
    rec = _Records(*(np.asarray(v, dtype=np.int64) for v in parts), files=files)
    if len(rec.items) == 0:
        raise DataError(f"{folder / 'train.txt'}: no (user, item) pair: the training split is "
                        "empty")
    return _build(folder.name, str(folder), rec, folder, may_grow=True,
                  n_users=max(largest_user, int(rec.users.max())) + 1)


# ----------------------------------------------------------------------------- RecBole

def _at(file: Path):
    """Where a line of `file` is, in this module's messages: ``<file name> line <n>``."""
    return lambda line_no: f"{file.name} line {line_no}"


def read_recbole(path, name: str | None = None, seed: int = 2025) -> Dataset:
    """Read RecBole atomic files, remap ids densely and split per user (MMRec's rule).

    Dense ids follow the order of FIRST APPEARANCE in ``<name>.inter`` (as RecBole's own
    remapping, without its padding id 0); ``raw_user_ids[u]`` / ``raw_item_ids[i]`` hold the
    original tokens. Every interaction counts as positive (ratings are not thresholded);
    repeated (user, item) pairs keep their first line (counted warning). Any ``*_feat.npy``
    in the folder must have one row per dense id in that order (``len(raw_item_ids)`` rows).

    Args:
      path: folder holding ``<name>.inter`` (and optionally ``<name>.item``, ``*_feat.npy``).
      name: dataset name; default the folder's name, or the only ``*.inter`` in it.
      seed: seed of the per-user random split (`split.split_per_user`).
    """
    folder = _folder(path)
    file = _inter_file(folder, name)
    lines = _read_lines(file)
    if not lines:
        raise DataError(f"{file} line 1: expected a typed header such as "
                        "'user_id:token<TAB>item_id:token'")
    names, _ = typed_header(_at(file), lines[0], (RECBOLE_USER_FIELD, RECBOLE_ITEM_FIELD))
    iu, ii = names.index(RECBOLE_USER_FIELD), names.index(RECBOLE_ITEM_FIELD)
    user_ids: dict[str, int] = {}
    item_ids: dict[str, int] = {}
    users, items, line_nos = [], [], []
    for line_no, fields in typed_rows(_at(file), lines, len(names)):
        u, i = fields[iu].strip(), fields[ii].strip()
        if not u or not i:
            empty = RECBOLE_USER_FIELD if not u else RECBOLE_ITEM_FIELD
            raise DataError(f"{file.name} line {line_no}: {empty} is empty: expected a token")
        users.append(user_ids.setdefault(u, len(user_ids)))
        items.append(item_ids.setdefault(i, len(item_ids)))
        line_nos.append(line_no)
    if not users:
        raise DataError(f"{file.name}: no interactions: the training split would be empty")
    pairs = np.stack([np.asarray(users, np.int64), np.asarray(items, np.int64)], axis=1)
    key = pairs[:, 0] * len(item_ids) + pairs[:, 1]
    _, first = np.unique(key, return_index=True)
    if len(first) < len(pairs):
        repeated = np.setdiff1d(np.arange(len(pairs)), first)
        warnings.warn(f"{file.name}: dropped {len(repeated)} repeated (user, item) pairs (first "
                      f"at line {line_nos[int(repeated[0])]})", stacklevel=2)
    train, valid, test = split_per_user(pairs[np.sort(first)], len(user_ids), seed)
    all_pairs = np.concatenate([train, valid, test]).astype(np.int64)
    splits = np.repeat(np.arange(3), [len(train), len(valid), len(test)])
    rec = _Records(all_pairs[:, 0], all_pairs[:, 1], splits, np.zeros(len(splits), np.int64),
                   files=(file.name,) * 3)
    return _build(file.stem, str(file), rec, folder, may_grow=False,
                  n_users=len(user_ids), n_items=len(item_ids),
                  raw_user_ids=np.asarray(list(user_ids), dtype=str),
                  raw_item_ids=np.asarray(list(item_ids), dtype=str))


def read_recbole_items(path, name: str | None, dataset: Dataset) -> dict[int, dict[str, str]]:
    """Item attributes from RecBole's ``<name>.item``, keyed by `dataset`'s dense item ids.

    Args:
      path: folder holding ``<name>.item``.
      name: dataset name; default ``dataset.name``.
      dataset: what `read_recbole` returned (its ``raw_item_ids`` map tokens to dense ids).
    Returns:
      ``{dense item id: {field: value}}`` for the items of `dataset` listed in the file; field
      names without their type (``movie_title``, ``release_year``, ``class``...), the item id
      field left out, values as strings (``token_seq`` lists space-separated). Items of the
      file that `dataset` does not hold are skipped; items it holds but the file lacks are absent.
    """
    if dataset.raw_item_ids is None:
        raise DataError(f"{dataset.source}: dataset has no raw_item_ids: expected one read by "
                        "read_recbole")
    file = _folder(path) / f"{name or dataset.name}.item"
    lines = _read_lines(file)
    if not lines:
        raise DataError(f"{file} line 1: expected a typed header such as "
                        "'item_id:token<TAB>movie_title:token_seq'")
    names, _ = typed_header(_at(file), lines[0], (RECBOLE_ITEM_FIELD,))
    ii = names.index(RECBOLE_ITEM_FIELD)
    dense = {tok: i for i, tok in enumerate(dataset.raw_item_ids.tolist())}
    out: dict[int, dict[str, str]] = {}
    seen_at: dict[int, int] = {}
    for line_no, fields in typed_rows(_at(file), lines, len(names)):
        item = dense.get(fields[ii].strip())
        if item is None:
            continue
        if item in out:
            raise DataError(f"{file.name} line {line_no}: item '{fields[ii]}' already listed "
                            f"on line {seen_at[item]}: expected one line per item")
        seen_at[item] = line_no
        out[item] = {f: " ".join(v.split()) for c, (f, v) in enumerate(zip(names, fields))
                     if c != ii}
    return out
