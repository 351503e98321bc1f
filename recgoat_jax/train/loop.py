"""The run loop: train epochs, evaluate on schedule, select a model, write the run's outputs.

Outputs in `out_dir`: config.toml (resolved), metrics.jsonl (one line per epoch), result.json,
and with ``train.checkpoint_every > 0`` checkpoints/ (`recgoat_jax.train.checkpoint`).
Data-parallel over ``train.n_devices`` devices (`recgoat_jax.train.parallel`); with several
processes (`recgoat_jax.train.distributed`) only process 0 writes files.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from recgoat_jax import config as config_lib
from recgoat_jax.config import RunConfig
from recgoat_jax.data import Dataset
from recgoat_jax.eval import protocol as protocol_lib
from recgoat_jax.eval.ranking import RankingEvaluator
from recgoat_jax.io_utils import JsonlWriter, atomic_write_json, atomic_write_text
from recgoat_jax.models import Recommender, build_model
from recgoat_jax.models.base import compute_dtype
from recgoat_jax.train import distributed, parallel
from recgoat_jax.train.checkpoint import CheckpointError, Checkpointer, Progress
from recgoat_jax.train.epoch import make_epoch_fn
from recgoat_jax.train.guard import check_epoch
from recgoat_jax.train.state import TrainState, init_state, make_optimizer


def count_params(params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


class Trainer:
    """Holds the compiled functions of one run; `run()` trains and returns the result dict.

    `mesh`: the data-parallel mesh; None builds one of ``train.n_devices`` devices.
    """

    def __init__(self, cfg: RunConfig, dataset: Dataset, model: Recommender | None = None,
                 mesh=None):
        distributed.initialize(cfg.distributed)
        compute_dtype(cfg.train.precision)  # ConfigError on an unknown precision, any model
        self.cfg, self.dataset = cfg, dataset
        self.mesh = mesh if mesh is not None else parallel.make_mesh(cfg.train.n_devices)
        parallel.check_divisible("train.batch_size", cfg.train.batch_size, self.mesh)
        self.model = model or build_model(cfg, dataset)
        self.optimizer = make_optimizer(cfg.train)
        replicated = parallel.replicated(self.mesh)
        self.inputs = parallel.place(self.model.inputs, replicated)
        self.train_pairs = parallel.place(dataset.train.astype(np.int32), replicated)
        epoch_fn = make_epoch_fn(self.model, self.optimizer, dataset.n_items,
                                 cfg.train.batch_size, constrain=parallel.constrain_batch(self.mesh))
        self.epoch_fn = jax.jit(epoch_fn, in_shardings=replicated, out_shardings=replicated,
                                donate_argnums=(0,))
        self.embed_fn = jax.jit(self.model.embed, in_shardings=replicated,
                                out_shardings=replicated)
        ev = cfg.eval
        self.evaluators = {
            split: RankingEvaluator(dataset.n_users, dataset.n_items, dataset.train,
                                    getattr(dataset, split), ks=ev.ks, user_batch=ev.user_batch,
                                    mesh=self.mesh)
            for split in ("valid", "test") if len(getattr(dataset, split))}

    @property
    def metric(self) -> str | None:
        """The selection metric; empty config value: the protocol's (recall@20 / ndcg@20)."""
        return self.cfg.eval.metric or None

    def init_state(self) -> TrainState:
        """The initial state, replicated on the mesh (the same on every device count)."""
        def make(seed_key):
            init_key, train_key = jax.random.split(seed_key)
            return init_state(self.model.init(init_key), self.optimizer, train_key)

        # jit: flax's eager init of RecGOAT runs its whole forward op by op (~20 s on CPU)
        return jax.jit(make, out_shardings=parallel.replicated(self.mesh))(
            jax.random.PRNGKey(self.cfg.train.seed))

    def evaluate(self, params, splits=("valid", "test")) -> dict[str, dict[str, float]]:
        z_user, z_item = self.embed_fn(params, self.inputs)
        return {s: self.evaluators[s](z_user, z_item) for s in splits if s in self.evaluators}

    def train_epoch(self, state: TrainState) -> tuple[TrainState, dict, float]:
        t0 = time.perf_counter()
        state, stats = self.epoch_fn(state, self.train_pairs, self.inputs)
        stats = {k: float(v) for k, v in parallel.to_host(stats).items()}
        return state, stats, time.perf_counter() - t0

    def run(self, out_dir: str | Path | None = None, progress: bool = True,
            resume: bool = False) -> dict:
        """Train (or, with `resume`, continue from the newest checkpoint in `out_dir`).

        Returns result.json's content. A resumed run gives the same parameters, metrics and
        metrics.jsonl lines as one that was never interrupted (only timings differ).
        """
        cfg, ev = self.cfg, self.cfg.eval
        out = Path(out_dir).absolute() if out_dir else None
        if resume and out is None:
            raise ValueError("resume=True needs the out_dir of the run to continue")
        every_ckpt = cfg.train.checkpoint_every
        checkpointer = (Checkpointer(out / "checkpoints", cfg, cfg.train.max_to_keep)
                        if out and (every_ckpt > 0 or resume) else None)
        state = self.init_state()
        record = Progress(selection=protocol_lib.init_early_stopping(ev.protocol))
        last_checkpoint = None
        if resume:  # raises before anything is written when the checkpoint does not fit
            state, record, last_checkpoint = checkpointer.restore_latest(state)
        elif checkpointer and checkpointer.epochs():
            raise CheckpointError(f"{checkpointer.directory} holds checkpoints of an earlier "
                                  "run: continue it with --resume, or use another --out")
        writer = None
        if out and distributed.is_main_process():
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "config.toml", config_lib.dumps(cfg))
            if resume:
                _keep_metric_lines(out / "metrics.jsonl", int(state.epoch))
            writer = JsonlWriter(out / "metrics.jsonl", "a" if resume else "w")
        selection, stats, stop = record.selection, dict(record.last_stats), record.stopped
        times, compile_epochs = list(record.epoch_times), list(record.compile_epochs)
        every = ev.every or None  # 0: the protocol's default (1 mmrec, 20 reference)
        splits = ("test",) if ev.protocol == "reference" else ("valid", "test")
        epochs = cfg.train.epochs if self.model.trainable else 0
        last_metrics: dict = {}
        t_start = time.perf_counter()
        first = int(state.epoch) + 1
        bar = tqdm(range(first, max(epochs, first - 1) + 1), desc=f"{self.model.name}",
                   disable=not progress or stop or not distributed.is_main_process(),
                   dynamic_ncols=True, initial=first - 1, total=epochs)
        try:
            for epoch in ([] if stop else bar):
                state, stats, seconds = self.train_epoch(state)
                times.append(seconds)
                if epoch == first:  # this process's first call compiled the epoch
                    compile_epochs.append(epoch)
                check_epoch(epoch, stats, last_checkpoint=last_checkpoint)
                line = {"epoch": epoch, "seconds": seconds, **stats}
                improved = False
                if protocol_lib.should_evaluate(ev.protocol, epoch - 1, every):
                    metrics = self.evaluate(state.params, splits)
                    selection, improved, stop = protocol_lib.update(
                        selection, epoch, metrics.get("valid"), metrics.get("test"),
                        metric=self.metric, patience=ev.patience)
                    line.update({f"{s}/{k}": v for s, m in metrics.items() for k, v in m.items()})
                    last_metrics = metrics
                if writer:
                    writer.write(line)
                if checkpointer and every_ckpt > 0 and (
                        improved or epoch % every_ckpt == 0 or epoch == epochs or stop):
                    if improved:
                        checkpointer.set_best(epoch)
                    last_checkpoint = checkpointer.save(
                        epoch, state, Progress(
                            selection=selection, epoch_times=tuple(times),
                            compile_epochs=tuple(compile_epochs), last_stats=stats,
                            stopped=stop))
                bar.set_postfix(loss=f"{stats['loss']:.4f}",
                                **_postfix(last_metrics, self.metric or "recall@20"))
                if stop:
                    break
            if epochs == 0:  # nothing to train (popularity): evaluate once
                metrics = self.evaluate(state.params, ("valid", "test"))
                selection, _, _ = protocol_lib.update(selection, 0, metrics.get("valid"),
                                                      metrics.get("test"), metric=self.metric)
        finally:
            bar.close()
            if writer:
                writer.close()
            if checkpointer:
                checkpointer.close()  # waits for the asynchronous saves
        result = {
            "model": self.model.name,
            "dataset": self.dataset.name,
            **protocol_lib.selection_result(selection),
            "epochs_run": len(times),
            "first_epoch_seconds": times[0] if times else 0.0,
            "epoch_seconds_median": _median_without_compiles(times, compile_epochs),
            "wall_seconds": time.perf_counter() - t_start,
            "n_params": count_params(state.params),
            "final_loss": float(stats["loss"]) if times else math.nan,
        }
        if out and distributed.is_main_process():
            atomic_write_json(out / "result.json", result)
        self.state = state
        return result


def _median_without_compiles(times: list[float], compile_epochs: list[int]) -> float:
    """Median epoch time over the epochs that did not compile (all of them if none)."""
    steady = [t for epoch, t in enumerate(times, 1) if epoch not in compile_epochs]
    return statistics.median(steady or times) if times else 0.0


def _keep_metric_lines(path: Path, last_epoch: int) -> None:
    """Drop the metrics.jsonl lines of epochs after `last_epoch` (trained again on resume)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line)["epoch"] <= last_epoch]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def _postfix(metrics: dict, metric: str) -> dict:
    out = {}
    for split in ("valid", "test"):
        if split in metrics and metric in metrics[split]:
            out[f"{split[0]}_{metric}"] = f"{metrics[split][metric]:.4f}"
    return out


def train(cfg: RunConfig, dataset: Dataset, out_dir=None, progress: bool = True,
          resume: bool = False) -> dict:
    """Train `cfg.model.name` on `dataset` (continue the run in `out_dir` with `resume`);
    return result.json's content."""
    distributed.initialize(cfg.distributed)
    return Trainer(cfg, dataset).run(out_dir, progress, resume=resume)
