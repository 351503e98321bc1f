"""Small file helpers: atomic writes (temporary name, then rename) and JSON lines.

Files are created with the usual permissions, 0666 minus the process umask (0644 normally), as
`open` would create them; `tempfile.mkstemp` alone would leave them 0600.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np


def _umask() -> int:
    """The process umask, read without changing it where the OS tells it (Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside `path` (mode 0666 & ~umask), renamed onto `path` only if
    the block succeeds; removed otherwise. The block writes (and fsyncs) the temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        os.close(fd)
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _to_jsonable(x):
    if isinstance(x, dict):
        return {str(k): _to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_jsonable(v) for v in x]
    if isinstance(x, (np.generic, np.ndarray)) or hasattr(x, "__array__"):
        arr = np.asarray(x)
        return arr.item() if arr.ndim == 0 else arr.tolist()
    return x


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(_to_jsonable(obj), indent=2, sort_keys=True) + "\n")


def save_npy_atomic(path, array: np.ndarray) -> None:
    """np.save to a temporary name in the same folder, then rename."""
    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


def jsonl_line(obj, sort_keys: bool = True) -> str:
    """One JSON-lines record: `obj` (numpy scalars and arrays as numbers and lists), UTF-8
    characters kept as they are, ending in a newline."""
    return json.dumps(_to_jsonable(obj), sort_keys=sort_keys, ensure_ascii=False) + "\n"


class JsonlWriter:
    """Appends one JSON object per line, flushed at once (a killed run keeps its lines).

    mode: "w" (start the file) or "a" (append); sort_keys: as `jsonl_line`.
    """

    def __init__(self, path, mode: str = "w", sort_keys: bool = True):
        self._f = open(path, mode, encoding="utf-8")
        self._sort_keys = sort_keys

    def write(self, obj) -> None:
        self._f.write(jsonl_line(obj, self._sort_keys))
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_jsonl_atomic(path: str | os.PathLike, records: Iterable, sort_keys: bool = False) -> int:
    """Stream one JSON object per line to a temporary file, then rename it onto `path`.

    Returns the record count. Streamed, unlike `atomic_write_text`: a prompts file of a large
    dataset does not fit comfortably in memory as one string.
    """
    n = 0
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for record in records:
                f.write(jsonl_line(record, sort_keys))
                n += 1
            f.flush()
            os.fsync(f.fileno())
    return n
