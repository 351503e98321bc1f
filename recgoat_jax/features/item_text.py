"""Item texts: read them from a file and line them up with a dataset's dense item ids.

Three inputs are understood (``fmt="auto"`` picks by file name):

* ``.tsv``: ``item_id<TAB>text`` per line (the text may itself hold tabs); a first line whose id
  column is a header word (``item_id``, ``itemID``, ``id``, ``item``, or ``name:token``) is skipped.
* ``.jsonl``: one object per line with an id field (``item_id`` by default) and a text field
  (``text`` by default).
* ``.item`` (RecBole atomic file): a tab-separated header of ``name:type`` columns; the text of an
  item is its ``token_seq`` columns (or the columns named in ``text_fields``) joined by ``". "``.

Ids are kept as the raw tokens of the file (strings); ``align_item_texts`` maps them onto the
dataset's item ids 0..I-1 (through ``Dataset.raw_item_ids`` when the reader remapped ids).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

from recgoat_jax.data.dataset import Dataset, DataError
from recgoat_jax.data.text_formats import json_objects, typed_header, typed_rows

FORMATS = ("auto", "tsv", "jsonl", "recbole")
_TSV_HEADER_IDS = {"item_id", "itemid", "id", "item"}


def detect_format(path: str | os.PathLike) -> str:
    """``"tsv"``, ``"jsonl"`` or ``"recbole"`` from the file name; DataError if it says nothing."""
    name = str(path).lower()
    for suffix, fmt in ((".tsv", "tsv"), (".txt", "tsv"), (".jsonl", "jsonl"),
                        (".json", "jsonl"), (".item", "recbole")):
        if name.endswith(suffix):
            return fmt
    raise DataError(f"{path}: cannot tell the item-text format from the file name: expected a "
                    "name ending in .tsv, .jsonl or .item, or an explicit format "
                    "(tsv|jsonl|recbole)")


def read_item_texts(path: str | os.PathLike, fmt: str = "auto", *, id_field: str = "item_id",
                    text_field: str = "text",
                    text_fields: Sequence[str] = ()) -> dict[str, str]:
    """Read ``{raw item id: text}`` from a TSV, JSONL or RecBole ``.item`` file.

    Args:
      path: the file.
      fmt: one of ``FORMATS``.
      id_field: JSONL key / RecBole column name (without ``:type``) holding the item id.
      text_field: JSONL key holding the text.
      text_fields: RecBole columns (without ``:type``) to join into the text; empty = every
        ``token_seq`` column, in header order.
    Returns:
      raw id token -> text (stripped; may be ``""`` when the file has an empty text).
    Raises:
      DataError naming the file, the line and what was expected; also on a repeated id.
    """
    if fmt not in FORMATS:
        raise DataError(f"{path}: unknown item-text format '{fmt}': expected one of {FORMATS}")
    if fmt == "auto":
        fmt = detect_format(path)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise DataError(f"item-text file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from None
    reader = {"tsv": _parse_tsv, "jsonl": _parse_jsonl, "recbole": _parse_recbole}[fmt]
    kwargs = {"tsv": {}, "jsonl": {"id_field": id_field, "text_field": text_field},
              "recbole": {"id_field": id_field, "text_fields": tuple(text_fields)}}[fmt]
    texts: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for lineno, item_id, text in reader(str(path), lines, **kwargs):
        if item_id in texts:
            raise DataError(f"{path}:{lineno}: item id '{item_id}' appears again (first on line "
                            f"{first_line[item_id]}): expected one text per item")
        texts[item_id] = text.strip()
        first_line[item_id] = lineno
    return texts


def _parse_tsv(path: str, lines: list[str]):
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise DataError(f"{path}:{lineno}: expected 'item_id<TAB>text', found no tab")
        item_id, text = line.split("\t", 1)
        item_id = item_id.strip()
        if lineno == 1 and (item_id.lower() in _TSV_HEADER_IDS or ":" in item_id):
            continue
        if not item_id:
            raise DataError(f"{path}:{lineno}: empty item id in the first column")
        yield lineno, item_id, text


def _parse_jsonl(path: str, lines: list[str], *, id_field: str, text_field: str):
    for lineno, record in json_objects(path, lines):
        for key in (id_field, text_field):
            if key not in record:
                raise DataError(f"{path}:{lineno}: missing field '{key}' "
                                f"(fields present: {sorted(record)})")
        text = record[text_field]
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise DataError(f"{path}:{lineno}: field '{text_field}' must be a string, "
                            f"got {type(text).__name__}")
        yield lineno, str(record[id_field]).strip(), text


def _parse_recbole(path: str, lines: list[str], *, id_field: str, text_fields: tuple[str, ...]):
    if not lines:
        raise DataError(f"{path}: empty file: expected a header of name:type columns")
    def at(lineno: int) -> str:
        return f"{path}:{lineno}"

    names, types = typed_header(at, lines[0], (id_field,))
    id_col = names.index(id_field)
    if text_fields:
        missing = [t for t in text_fields if t not in names]
        if missing:
            raise DataError(f"{path}:1: text column(s) {missing} not in the header "
                            f"(columns: {names})")
        text_cols = [names.index(t) for t in text_fields]
    else:
        text_cols = [c for c, kind in enumerate(types) if kind == "token_seq" and c != id_col]
        if not text_cols:
            raise DataError(f"{path}:1: no token_seq column to take text from (columns: "
                            f"{names}); name the columns to use")
    for lineno, values in typed_rows(at, lines, len(names)):
        parts = [values[c].strip() for c in text_cols]
        yield lineno, values[id_col].strip(), ". ".join(p for p in parts if p)


def align_item_texts(texts: dict[str, str], ds: Dataset,
                     where: str = "item texts") -> list[str | None]:
    """Put texts in the order of the dataset's dense item ids.

    Args:
      texts: raw id token -> text, as ``read_item_texts`` returns.
      ds: the dataset; when ``ds.raw_item_ids`` is set, file ids are matched against it,
        otherwise file ids must be the dense integer ids themselves.
      where: names the source in messages.
    Returns:
      ``[I]`` list: entry r is the text of item r, or ``None`` when the file has none for it
      (or only whitespace). Texts for ids the dataset does not hold are dropped with a warning.
    Raises:
      DataError when ids are not integers and the dataset has no raw ids to match them with.
    """
    by_dense: list[str | None] = [None] * ds.n_items
    unknown: list[str] = []
    if ds.raw_item_ids is not None:
        index = {str(raw): dense for dense, raw in enumerate(ds.raw_item_ids)}
        for raw, text in texts.items():
            dense = index.get(raw)
            if dense is None:
                unknown.append(raw)
            else:
                by_dense[dense] = text.strip() or None
    else:
        for raw, text in texts.items():
            try:
                dense = int(raw)
            except ValueError:
                raise DataError(f"{where}: item id '{raw}' is not an integer, and dataset "
                                f"'{ds.name}' has dense ids 0..{ds.n_items - 1} with no raw ids "
                                "to match it against") from None
            if 0 <= dense < ds.n_items:
                by_dense[dense] = text.strip() or None
            else:
                unknown.append(raw)
    if unknown:
        warnings.warn(f"{where}: ignored texts of {len(unknown)} item ids that dataset "
                      f"'{ds.name}' does not hold (e.g. {unknown[:5]})", stacklevel=2)
    return by_dense


def missing_item_ids(aligned: Sequence[str | None], ds: Dataset) -> list[str]:
    """Human-readable ids (``"3"`` or ``"3 (raw 'B00X')"``) of the items with no text."""
    out = []
    for dense, text in enumerate(aligned):
        if text is None:
            raw = f" (raw '{ds.raw_item_ids[dense]}')" if ds.raw_item_ids is not None else ""
            out.append(f"{dense}{raw}")
    return out
