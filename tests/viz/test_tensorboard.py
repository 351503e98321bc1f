"""recgoat_jax.viz.tensorboard: metrics lines -> TensorBoard scalars, read back from the file."""

import struct
import sys

import numpy as np
import pytest

from recgoat_jax.viz.tensorboard import TENSORBOARDX_MISSING, TensorBoardWriter


def read_scalars(log_dir) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} of every event file in `log_dir`, parsed as TFRecords
    (uint64 length, uint32 crc, payload, uint32 crc) of tensorboardX's Event protos."""
    event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
    from tensorboardX.record_writer import masked_crc32c
    scalars: dict[str, dict[int, float]] = {}
    files = sorted(log_dir.rglob("events.out.tfevents.*"))
    assert files, f"no event file under {log_dir}"
    for path in files:
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            header = data[pos:pos + 8]
            (length,) = struct.unpack("<Q", header)
            payload = data[pos + 12:pos + 12 + length]
            assert len(payload) == length, "truncated event record"
            assert struct.unpack("<I", data[pos + 8:pos + 12])[0] == masked_crc32c(header)
            crc = data[pos + 12 + length:pos + 16 + length]
            assert struct.unpack("<I", crc)[0] == masked_crc32c(payload)
            pos += 12 + length + 4
            event = event_pb2.Event.FromString(payload)
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


def test_three_epochs_read_back(tmp_path):
    pytest.importorskip("tensorboardX")
    lines = [{"epoch": e, "seconds": 0.5 / e, "loss": 0.7 - 0.1 * e, "bpr": 0.69,
              "finite": True, "plan_image_sum": np.float32(64.0 + e), "note": "text",
              "valid/recall@20": 0.1 * e, "test/ndcg@20": 0.05 * e, "n": e * 10,
              "vector": np.ones(3)}
             for e in (1, 2, 3)]
    log_dir = tmp_path / "run" / "tensorboard"
    with TensorBoardWriter(log_dir) as writer:
        for line in lines:
            writer.write(line["epoch"], line)
    scalars = read_scalars(log_dir)
    assert set(scalars) == {"seconds", "loss", "bpr", "plan_image_sum", "valid/recall@20",
                            "test/ndcg@20", "n"}  # no epoch, boolean, string or vector
    for tag, by_step in scalars.items():
        assert sorted(by_step) == [1, 2, 3]
        for line in lines:
            assert by_step[line["epoch"]] == pytest.approx(float(line[tag]), rel=1e-6)


def test_writes_are_flushed_before_close(tmp_path):
    pytest.importorskip("tensorboardX")
    writer = TensorBoardWriter(tmp_path)
    writer.write(1, {"epoch": 1, "loss": 0.5})
    assert read_scalars(tmp_path) == {"loss": {1: 0.5}}  # a killed run keeps its events
    writer.close()
    writer.close()  # twice is harmless
    with pytest.raises(ValueError, match="is closed"):
        writer.write(2, {"loss": 0.4})


def test_resumed_run_adds_a_file(tmp_path):
    pytest.importorskip("tensorboardX")
    for epoch in (1, 2):  # a run, then its resume in the same second: two files, both kept
        with TensorBoardWriter(tmp_path) as writer:
            writer.write(epoch, {"epoch": epoch, "loss": 1.0 / epoch})
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2
    assert read_scalars(tmp_path) == {"loss": {1: 1.0, 2: 0.5}}


def test_missing_tensorboardx_says_how_to_install(tmp_path, monkeypatch):
    for name in [n for n in sys.modules if n.split(".")[0] == "tensorboardX"] + ["tensorboardX"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError) as e:
        TensorBoardWriter(tmp_path / "tb")
    assert str(e.value) == TENSORBOARDX_MISSING
    assert "pip install 'recgoat-jax[tensorboard]'" in str(e.value)
