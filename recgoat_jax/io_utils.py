"""Small file helpers: atomic writes (temporary name, then rename) and JSON lines."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
    import io
    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


class JsonlWriter:
    """Appends one JSON object per line, flushed at once (a killed run keeps its lines)."""

    def __init__(self, path, mode: str = "w"):
        self._f = open(path, mode)

    def write(self, obj) -> None:
        self._f.write(json.dumps(_to_jsonable(obj), sort_keys=True) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()
