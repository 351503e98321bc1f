"""Line-oriented text formats the readers share.

RecBole atomic files (``.inter``, ``.item``, ``.user``): a header line of tab-separated
``name:type`` columns, type one of ``RECBOLE_TYPES``, then one tab-separated value per column on
every data line (`typed_header`, `typed_rows`; used by `recgoat_jax.data.readers` and
`recgoat_jax.features.item_text`). JSON lines: one object per line (`json_objects`; used by
the item-text and the LLM-answer readers in `recgoat_jax.features`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

from recgoat_jax.data.dataset import DataError

RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")


def typed_header(at: Callable[[int], str], line: str,
                 required: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """(names, types) of a header ``name:type<TAB>...``; DataError starting with ``at(1)`` (the
    file and line, in the caller's style) when a column is not ``name:type`` with a known type,
    or a `required` name is missing."""
    names, types = [], []
    for col, field in enumerate(line.rstrip("\r\n").split("\t"), start=1):
        fname, sep, ftype = field.strip().partition(":")
        if not sep or ftype not in RECBOLE_TYPES or not fname:
            raise DataError(f"{at(1)}: column {col} is '{field}': expected "
                            f"'name:type' with type one of {list(RECBOLE_TYPES)}")
        names.append(fname)
        types.append(ftype)
    for req in required:
        if req not in names:
            raise DataError(f"{at(1)}: no '{req}' field in the header {names}: "
                            f"expected a '{req}:token' column")
    return names, types


def typed_rows(at: Callable[[int], str], lines: list[str],
               n_cols: int) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_no, fields)`` for the data lines (``lines[1:]``; blank lines skipped);
    DataError starting with ``at(line_no)`` when a line has not `n_cols` fields."""
    for line_no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) != n_cols:
            raise DataError(f"{at(line_no)}: {len(fields)} tab-separated fields: "
                            f"expected {n_cols}")
        yield line_no, fields


def json_objects(path, lines: list[str]) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_no, object)`` for the non-blank lines of a JSON-lines file; DataError
    naming ``path:line_no`` when a line is not valid JSON or not a JSON object."""
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{line_no}: not valid JSON ({e.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{line_no}: expected a JSON object, got "
                            f"{type(record).__name__}")
        yield line_no, record
