"""TensorBoard event files of a run's metrics lines (tensorboardX, the ``tensorboard`` extra).

    writer = TensorBoardWriter(out / "tensorboard")
    writer.write(epoch, line)   # each metrics.jsonl line: every number a scalar, tag = its key
    writer.close()

then ``tensorboard --logdir out/tensorboard``. tensorboardX is imported when the writer is
made, so the package works without it.
"""

from __future__ import annotations

import os
import time
import uuid

TENSORBOARDX_MISSING = ("train.tensorboard=true needs tensorboardX: "
                        "pip install 'recgoat-jax[tensorboard]'")


class TensorBoardWriter:
    """Writes metrics lines as TensorBoard scalars under `log_dir` (created if missing).

    `write(epoch, line)`: every numeric value of `line` (ints, floats, numpy/jax scalars) is
    one scalar at step `epoch`, tagged with its key as is (``loss``, ``valid/recall@20``,
    ...); ``epoch`` itself, booleans and non-numbers are skipped. Each call writes and fsyncs
    the event file, so a killed run keeps its events. Also a context manager."""

    def __init__(self, log_dir: str | os.PathLike):
        try:
            import tensorboardX  # noqa: F401  (the package first: its absence is the message)
            from tensorboardX.event_file_writer import EventsWriter
            from tensorboardX.proto.event_pb2 import Event
            from tensorboardX.proto.summary_pb2 import Summary
        except ImportError as e:
            raise ImportError(TENSORBOARDX_MISSING) from e
        os.makedirs(log_dir, exist_ok=True)
        self.log_dir = str(log_dir)
        self._event, self._summary = Event, Summary
        # tensorboardX's synchronous events writer, with Summary protos: SummaryWriter queues
        # events for a thread that writes them up to 2 minutes later (a killed run would lose
        # its last epochs), and its add_scalar rewrites tags ("valid/recall@20" ->
        # "valid/recall_20"). A random suffix: a resumed run never overwrites the earlier file.
        self._writer = EventsWriter(os.path.join(self.log_dir, "events"),
                                    filename_suffix=f".{uuid.uuid4().hex[:8]}")

    def write(self, epoch: int, line: dict) -> None:
        values = [self._summary.Value(tag=str(key), simple_value=v)
                  for key, value in line.items()
                  if key != "epoch" and (v := _scalar(value)) is not None]
        if self._writer is None:
            raise ValueError(f"TensorBoardWriter({self.log_dir!r}) is closed")
        if values:
            self._writer.write_event(self._event(wall_time=time.time(), step=int(epoch),
                                                 summary=self._summary(value=values)))
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> TensorBoardWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _scalar(value) -> float | None:
    """The float of a numeric scalar (Python, numpy or jax); None for booleans and the rest."""
    if value is None or isinstance(value, (bool, str, bytes, dict, list, tuple)):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    dtype = getattr(value, "dtype", None)
    if dtype is None or getattr(value, "shape", None) != () or dtype.kind not in "iuf":
        return None  # not a scalar array, or a boolean / complex / string one
    return float(value)
