"""io_utils: atomic writes create files with the usual permissions; JSON lines."""

import json
import os
import stat

import numpy as np
import pytest

from recgoat_jax import io_utils


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writes_get_0666_minus_the_umask(tmp_path, umask_022):
    io_utils.atomic_write_bytes(tmp_path / "a.bin", b"x")
    io_utils.atomic_write_json(tmp_path / "r.json", {"a": 1})
    io_utils.save_npy_atomic(tmp_path / "x.npy", np.zeros(3))
    n = io_utils.write_jsonl_atomic(tmp_path / "p.jsonl", [{"u": 1}, {"u": 2}])
    assert n == 2
    for name in ("a.bin", "r.json", "x.npy", "p.jsonl"):
        assert _mode(tmp_path / name) == 0o644, name
    os.umask(0o077)
    io_utils.atomic_write_text(tmp_path / "private.txt", "x")
    assert _mode(tmp_path / "private.txt") == 0o600


def test_a_failed_atomic_write_leaves_nothing(tmp_path):
    def records():
        yield {"u": 1}
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        io_utils.write_jsonl_atomic(tmp_path / "p.jsonl", records())
    assert list(tmp_path.iterdir()) == []


def test_jsonl_writer_appends_flushed_utf8_lines(tmp_path):
    path = tmp_path / "m.jsonl"
    with io_utils.JsonlWriter(path) as w:
        w.write({"b": np.float32(0.5), "a": "é"})
    with io_utils.JsonlWriter(path, "a", sort_keys=False) as w:
        w.write({"z": 1, "y": np.arange(2)})
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines == ['{"a": "é", "b": 0.5}', '{"z": 1, "y": [0, 1]}']
    assert [json.loads(line) for line in lines][1] == {"z": 1, "y": [0, 1]}
