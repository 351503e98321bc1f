"""The run loop: train epochs, evaluate on schedule, select a model, write the run's outputs.

Outputs in `out_dir`: config.toml (resolved), metrics.jsonl (one line per epoch), result.json.
"""

from __future__ import annotations

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
from recgoat_jax.train.epoch import make_epoch_fn
from recgoat_jax.train.guard import check_epoch
from recgoat_jax.train.state import TrainState, init_state, make_optimizer


def count_params(params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


class Trainer:
    """Holds the compiled functions of one run; `run()` trains and returns the result dict."""

    def __init__(self, cfg: RunConfig, dataset: Dataset, model: Recommender | None = None):
        self.cfg, self.dataset = cfg, dataset
        self.model = model or build_model(cfg, dataset)
        self.optimizer = make_optimizer(cfg.train)
        self.train_pairs = jax.numpy.asarray(dataset.train.astype(np.int32))
        self.epoch_fn = jax.jit(make_epoch_fn(self.model, self.optimizer, dataset.n_items,
                                              cfg.train.batch_size), donate_argnums=(0,))
        self.embed_fn = jax.jit(self.model.embed)
        ev = cfg.eval
        self.evaluators = {
            split: RankingEvaluator(dataset.n_users, dataset.n_items, dataset.train,
                                    getattr(dataset, split), ks=ev.ks, user_batch=ev.user_batch)
            for split in ("valid", "test") if len(getattr(dataset, split))}

    @property
    def metric(self) -> str | None:
        """The selection metric; empty config value: the protocol's (recall@20 / ndcg@20)."""
        return self.cfg.eval.metric or None

    def init_state(self) -> TrainState:
        init_key, train_key = jax.random.split(jax.random.PRNGKey(self.cfg.train.seed))
        return init_state(self.model.init(init_key), self.optimizer, train_key)

    def evaluate(self, params, splits=("valid", "test")) -> dict[str, dict[str, float]]:
        z_user, z_item = self.embed_fn(params, self.model.inputs)
        return {s: self.evaluators[s](z_user, z_item) for s in splits if s in self.evaluators}

    def train_epoch(self, state: TrainState) -> tuple[TrainState, dict, float]:
        t0 = time.perf_counter()
        state, stats = self.epoch_fn(state, self.train_pairs, self.model.inputs)
        stats = {k: float(v) for k, v in jax.device_get(stats).items()}
        return state, stats, time.perf_counter() - t0

    def run(self, out_dir: str | Path | None = None, progress: bool = True) -> dict:
        cfg, ev = self.cfg, self.cfg.eval
        out = Path(out_dir).absolute() if out_dir else None
        writer = None
        if out:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "config.toml", config_lib.dumps(cfg))
            writer = JsonlWriter(out / "metrics.jsonl")
        state = self.init_state()
        selection = protocol_lib.init_early_stopping(ev.protocol)
        every = ev.every or None  # 0: the protocol's default (1 mmrec, 20 reference)
        splits = ("test",) if ev.protocol == "reference" else ("valid", "test")
        epochs = cfg.train.epochs if self.model.trainable else 0
        times: list[float] = []
        last_metrics: dict = {}
        t_start = time.perf_counter()
        bar = tqdm(range(1, epochs + 1), desc=f"{self.model.name}", disable=not progress,
                   dynamic_ncols=True)
        try:
            for epoch in bar:
                state, stats, seconds = self.train_epoch(state)
                times.append(seconds)
                check_epoch(epoch, stats)
                line = {"epoch": epoch, "seconds": seconds, **stats}
                if protocol_lib.should_evaluate(ev.protocol, epoch - 1, every):
                    metrics = self.evaluate(state.params, splits)
                    selection, _, stop = protocol_lib.update(
                        selection, epoch, metrics.get("valid"), metrics.get("test"),
                        metric=self.metric, patience=ev.patience)
                    line.update({f"{s}/{k}": v for s, m in metrics.items() for k, v in m.items()})
                    last_metrics = metrics
                else:
                    stop = False
                if writer:
                    writer.write(line)
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
        result = {
            "model": self.model.name,
            "dataset": self.dataset.name,
            **protocol_lib.selection_result(selection),
            "epochs_run": len(times),
            "first_epoch_seconds": times[0] if times else 0.0,
            "epoch_seconds_median": statistics.median(times[1:]) if len(times) > 1
            else (times[0] if times else 0.0),
            "wall_seconds": time.perf_counter() - t_start,
            "n_params": count_params(state.params),
            "final_loss": float(stats["loss"]) if times else math.nan,
        }
        if out:
            atomic_write_json(out / "result.json", result)
        self.state = state
        return result


def _postfix(metrics: dict, metric: str) -> dict:
    out = {}
    for split in ("valid", "test"):
        if split in metrics and metric in metrics[split]:
            out[f"{split[0]}_{metric}"] = f"{metrics[split][metric]:.4f}"
    return out


def train(cfg: RunConfig, dataset: Dataset, out_dir=None, progress: bool = True) -> dict:
    """Train `cfg.model.name` on `dataset`; return result.json's content."""
    return Trainer(cfg, dataset).run(out_dir, progress)
