"""The run loop: train epochs, evaluate on schedule, select a model, write the run's outputs.

Outputs in `out_dir` (`recgoat_jax.train.run_dir` describes each file): config.toml,
metrics.jsonl, result.json, train.log, best/ (the selected epoch's parameters), and with
``train.checkpoint_every > 0`` (or after Ctrl-C) checkpoints/. Data-parallel over
``train.n_devices`` devices (`recgoat_jax.train.parallel`); with several processes
(`recgoat_jax.train.distributed`) only process 0 writes files.
"""

from __future__ import annotations

import math
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from recgoat_jax import config as config_lib
from recgoat_jax.config import RunConfig
from recgoat_jax.data import Dataset
from recgoat_jax.data.load import data_source
from recgoat_jax.eval import protocol as protocol_lib
from recgoat_jax.eval.ranking import RankingEvaluator
from recgoat_jax.graph.partition import pad_tables, table_shardings, unpad_tables
from recgoat_jax.io_utils import JsonlWriter, atomic_write_json, atomic_write_text
from recgoat_jax.models import Recommender, build_model
from recgoat_jax.models.base import compute_dtype, init_params, traced_hyper_keys, with_hyper
from recgoat_jax.train import distributed, parallel, run_dir
from recgoat_jax.train.checkpoint import CheckpointError, Checkpointer, Progress
from recgoat_jax.train.epoch import make_epoch_fn
from recgoat_jax.train.guard import check_epoch, plan_warning
from recgoat_jax.train.preflight import check_run, step_batch_size
from recgoat_jax.train.state import TrainState, init_state, make_optimizer


def count_params(params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


class RunInterrupted(Exception):
    """Ctrl-C stopped a run after a whole epoch; `checkpoint` is where it was saved (None when
    the run had no output folder)."""

    def __init__(self, epoch: int, checkpoint: str | None):
        self.epoch, self.checkpoint = epoch, checkpoint
        where = f"; checkpoint saved in {checkpoint}" if checkpoint else ""
        super().__init__(f"interrupted after epoch {epoch}{where}")


def make_evaluator(dataset: Dataset, split: str, ev, mesh) -> RankingEvaluator:
    """The full-ranking evaluator of `split` ("valid" | "test") as every model is ranked:
    only the TRAINING items are masked, for valid and for test alike (the MMRec protocol).
    `ev`: an `EvalConfig` (ks, user_batch); `mesh`: None for the first device."""
    return RankingEvaluator(dataset.n_users, dataset.n_items, dataset.train,
                            getattr(dataset, split), ks=ev.ks, user_batch=ev.user_batch,
                            mesh=mesh)


def make_evaluators(dataset: Dataset, ev, mesh) -> dict[str, RankingEvaluator]:
    """{split: full-ranking evaluator} for the non-empty valid / test splits."""
    return {split: make_evaluator(dataset, split, ev, mesh)
            for split in ("valid", "test") if len(getattr(dataset, split))}


class Trainer:
    """Holds the compiled functions of one run; `run()` trains and returns the result dict.

    `mesh`: the data-parallel mesh; None builds one of ``train.n_devices`` devices.
    Raises ConfigError (before anything is compiled) when `cfg` cannot run on `dataset`.
    """

    def __init__(self, cfg: RunConfig, dataset: Dataset, model: Recommender | None = None,
                 mesh=None):
        distributed.initialize(cfg.distributed)
        compute_dtype(cfg.train.precision)  # ValueError on an unknown precision, any model
        if model is None:
            check_run(cfg, dataset)
        self.cfg, self.dataset = cfg, dataset
        self.mesh = mesh if mesh is not None else parallel.make_mesh(cfg.train.n_devices)
        self.batch_size = step_batch_size(cfg.train.batch_size, len(dataset.train),
                                          parallel.data_size(self.mesh))
        parallel.check_divisible("train.batch_size", self.batch_size, self.mesh)
        self.model = model or build_model(cfg, dataset, self.mesh)
        self.optimizer = make_optimizer(cfg.train)
        replicated = parallel.replicated(self.mesh)
        self.layout = self.model.layout  # train.sharding = "graph": tables split by rows
        inputs_sharding = parallel.rows(self.mesh) if self.layout else replicated
        self.inputs = parallel.place(self.model.inputs, inputs_sharding)
        self.train_pairs = parallel.place(dataset.train.astype(np.int32), replicated)
        flat = config_lib.to_flat_dict(cfg)
        self.hyper = parallel.place({k: np.float32(flat[k]) for k in
                                     traced_hyper_keys(self.model, [flat])}, replicated)
        model, constrain = self.model, parallel.constrain_batch(self.mesh)
        self.state_sharding = self._state_sharding()

        def epoch_fn(state, train_pairs, inputs, hyper):
            epoch = make_epoch_fn(with_hyper(model, hyper), self.optimizer, dataset.n_items,
                                  self.batch_size, constrain=constrain)
            # the mesh in context lets the losses split their own row sets over "data"
            # (losses.infonce_gathered's distinct rows), as `constrain` splits the batch
            with jax.sharding.use_abstract_mesh(self.mesh.abstract_mesh):
                return epoch(state, train_pairs, inputs)

        self.epoch_fn = jax.jit(
            epoch_fn, in_shardings=(self.state_sharding, replicated, inputs_sharding, replicated),
            out_shardings=(self.state_sharding, replicated), donate_argnums=(0,))
        self.embed_fn = jax.jit(lambda params, inputs, hyper: with_hyper(model, hyper).embed(
            params, inputs), in_shardings=(self.state_sharding.params, inputs_sharding,
                                           replicated), out_shardings=replicated)
        # Checkpoints and best/params.npz hold the tables at [U, d] / [I, d] under either
        # sharding, so a run resumes under another sharding or device count.
        if self.layout:
            self._export = jax.jit(lambda tree: unpad_tables(tree, self.layout),
                                   out_shardings=replicated)
            self._import = jax.jit(lambda tree: pad_tables(tree, self.layout),
                                   out_shardings=self.state_sharding)
        else:
            self._export = self._import = lambda tree: tree
        self.diagnostics_fn = (jax.jit(self.model.diagnostics) if self.model.diagnostics
                               else None)
        self.evaluators = make_evaluators(dataset, cfg.eval, self.mesh)

    @property
    def metric(self) -> str | None:
        """The selection metric; empty config value: the protocol's (recall@20 / ndcg@20)."""
        return self.cfg.eval.metric or None

    def _make_state(self, seed_key, hyper) -> TrainState:
        init_key, train_key = jax.random.split(seed_key)
        return init_state(init_params(self.model, init_key, hyper), self.optimizer, train_key)

    def _state_sharding(self):
        """The TrainState's shardings: replicated, or (graph sharding) the ID tables and
        their moments split by rows."""
        if not self.layout:
            return TrainState(*[parallel.replicated(self.mesh)] * 4)
        shapes = jax.eval_shape(self._make_state, jax.random.PRNGKey(0), self.hyper)
        return table_shardings(shapes, self.mesh, parallel.DATA_AXIS)

    def init_state(self) -> TrainState:
        """The initial state on the mesh (the same values on every device count)."""
        # jit: flax's eager init of RecGOAT runs its whole forward op by op (~20 s on CPU)
        return jax.jit(self._make_state, out_shardings=self.state_sharding)(
            jax.random.PRNGKey(self.cfg.train.seed), self.hyper)

    def export(self, tree):
        """`tree` (a state or parameters) with the ID tables at their [U, d] / [I, d] rows,
        replicated: what checkpoints and best/params.npz hold."""
        return self._export(tree)

    def embed(self, params) -> tuple[jax.Array, jax.Array]:
        """z_user [U, d], z_item [I, d] of `params` (eval mode)."""
        return self.embed_fn(params, self.inputs, self.hyper)

    def evaluate(self, params, splits=("valid", "test")) -> dict[str, dict[str, float]]:
        z_user, z_item = self.embed(params)
        return {s: self.evaluators[s](z_user, z_item) for s in splits if s in self.evaluators}

    def lower_epoch(self, state: TrainState):
        """The epoch function lowered for `state` (for cost / memory analysis and HLO)."""
        return self.epoch_fn.lower(state, self.train_pairs, self.inputs, self.hyper)

    def train_epoch(self, state: TrainState) -> tuple[TrainState, dict, float]:
        t0 = time.perf_counter()
        state, stats = self.epoch_fn(state, self.train_pairs, self.inputs, self.hyper)
        stats = {k: float(v) for k, v in parallel.to_host(stats).items()}
        return state, stats, time.perf_counter() - t0

    def diagnostics(self, params) -> dict[str, float]:
        """The model's scalar diagnostics of `params` (fusion weights, gate share), or {}."""
        if self.diagnostics_fn is None:
            return {}
        return {k: float(v) for k, v in parallel.to_host(self.diagnostics_fn(params)).items()}

    def run(self, out_dir: str | Path | None = None, progress: bool = True,
            resume: bool = False, overwrite: bool = False) -> dict:
        """Train (or, with `resume`, continue from the newest checkpoint in `out_dir` that
        verifies); returns result.json's content.

        A resumed run gives the same parameters, metrics and metrics.jsonl lines as one that
        was never interrupted (only timings differ). An `out_dir` holding a finished run is
        refused (run_dir.RunExists) unless `overwrite`. Ctrl-C ends the run after the epoch
        in progress with a checkpoint (RunInterrupted); a second Ctrl-C aborts at once.
        """
        cfg, ev = self.cfg, self.cfg.eval
        out = Path(out_dir).absolute() if out_dir else None
        if resume and out is None:
            raise ValueError("resume=True needs the out_dir of the run to continue")
        main = distributed.is_main_process()
        if out and main and not resume:  # before the checkpoints are looked at
            if overwrite:
                run_dir.prepare(out, resume=False, overwrite=True)
            else:
                run_dir.refuse_finished(out)
        every_ckpt = cfg.train.checkpoint_every
        checkpointer = (Checkpointer(out / "checkpoints", cfg, cfg.train.max_to_keep)
                        if out and (every_ckpt > 0 or resume) else None)
        state = self.init_state()
        record = Progress(selection=protocol_lib.init_early_stopping(ev.protocol))
        last_checkpoint, notes = None, []
        try:  # a refusal closes the checkpointer, as every other way out of run does
            if resume:  # raises before anything is written when no checkpoint fits
                state, record, last_checkpoint = checkpointer.restore_latest(self.export(state))
                state = self._import(state)
                notes += [f"skipped {why}" for why in checkpointer.skipped]
            elif checkpointer and checkpointer.epochs():
                raise CheckpointError(f"{checkpointer.directory} holds checkpoints of an "
                                      "earlier run: continue it with --resume, replace it "
                                      "with --overwrite, or use another --out")
        except BaseException:
            if checkpointer:
                checkpointer.close()
            raise
        writer = log = tensorboard = None
        if out and main:
            out.mkdir(parents=True, exist_ok=True)
            removed = run_dir.prepare(out, resume=resume, overwrite=False)
            if resume:
                note = run_dir.keep_metric_lines(out / "metrics.jsonl", int(state.epoch))
                notes += [note] if note else []
            log = run_dir.open_log(out, resume)
            atomic_write_text(out / "config.toml", config_lib.dumps(cfg))
            writer = JsonlWriter(out / "metrics.jsonl", "a" if resume else "w")
            if cfg.train.tensorboard:
                from recgoat_jax.viz.tensorboard import TensorBoardWriter
                tensorboard = TensorBoardWriter(out / "tensorboard")
            if removed and not resume:
                notes.append(f"removed the files of an unfinished earlier run: {removed}")
        say = _Reporter(log, progress and main)
        for note in notes:
            say(note)
        if resume:
            say(f"resumed from {last_checkpoint} (epoch {int(state.epoch)})")
        say(f"{self.model.name} on {self.dataset.name}: {self.dataset.n_users} users, "
            f"{self.dataset.n_items} items, {len(self.dataset.train)} training pairs; "
            f"{count_params(self.export(state.params))} parameters; "
            f"devices {parallel.data_size(self.mesh)}")
        if self.batch_size != cfg.train.batch_size:
            say(f"train.batch_size = {cfg.train.batch_size} is larger than the "
                f"{len(self.dataset.train)} training pairs: each step uses {self.batch_size} rows")
        selection, stats, stop = record.selection, dict(record.last_stats), record.stopped
        times, compile_epochs = list(record.epoch_times), list(record.compile_epochs)
        every = ev.every or None  # 0: the protocol's default (1 mmrec, 20 reference)
        splits = ("test",) if ev.protocol == "reference" else ("valid", "test")
        epochs = cfg.train.epochs if self.model.trainable else 0
        metric = self.metric or config_lib.selection_metric(cfg)
        last_metrics: dict = {}
        t_start = time.perf_counter()
        first = int(state.epoch) + 1
        bar = tqdm(range(first, max(epochs, first - 1) + 1), desc=f"{self.model.name}",
                   disable=not progress or stop or not main,
                   dynamic_ncols=True, initial=first - 1, total=epochs)

        def save_checkpoint(epoch, improved):
            nonlocal checkpointer
            if checkpointer is None:  # Ctrl-C without periodic checkpoints
                checkpointer = Checkpointer(out / "checkpoints", cfg, cfg.train.max_to_keep)
            if improved:
                checkpointer.set_best(epoch)
            return checkpointer.save(epoch, self.export(state), Progress(
                selection=selection, epoch_times=tuple(times),
                compile_epochs=tuple(compile_epochs), last_stats=stats, stopped=stop))

        plan_warned = False
        interrupt = _InterruptFlag()
        try:
            with interrupt:
                for epoch in ([] if stop else bar):
                    state, stats, seconds = self.train_epoch(state)
                    times.append(seconds)
                    if epoch == first:  # this process's first call compiled the epoch
                        compile_epochs.append(epoch)
                    check_epoch(epoch, stats, last_checkpoint=last_checkpoint)
                    if not plan_warned and (warning := plan_warning(
                            epoch, stats, cfg.model.oat.solver)):
                        say(warning)
                        plan_warned = True
                    line = {"epoch": epoch, "seconds": seconds, **stats,
                            **self.diagnostics(state.params)}
                    improved = False
                    if protocol_lib.should_evaluate(ev.protocol, epoch, every) or epoch == epochs:
                        metrics = self.evaluate(state.params, splits)
                        selection, improved, stop = protocol_lib.update(
                            selection, epoch, metrics.get("valid"), metrics.get("test"),
                            metric=self.metric, patience=ev.patience)
                        line.update({f"{s}/{k}": v for s, m in metrics.items()
                                     for k, v in m.items()})
                        last_metrics = metrics
                        if improved and out:  # export: a collective under graph sharding
                            best = parallel.to_host(self.export(state.params))
                            if main:
                                run_dir.save_best(out, best, epoch, selection.metric,
                                                  selection.best_value)
                    if writer:
                        writer.write(line)
                    if tensorboard:
                        tensorboard.write(epoch, line)
                    say.epoch(line, metric, improved)
                    if checkpointer and every_ckpt > 0 and (
                            improved or epoch % every_ckpt == 0 or epoch == epochs or stop):
                        last_checkpoint = save_checkpoint(epoch, improved)
                    bar.set_postfix(loss=f"{stats['loss']:.4f}", **_postfix(last_metrics, metric))
                    if stop:
                        say(f"early stopping after epoch {epoch}: {ev.patience + 1} "
                            f"evaluations without a better valid {metric}")
                        break
                    if interrupt.requested:
                        path = (last_checkpoint if last_checkpoint and last_checkpoint.endswith(
                            f"/{epoch}") else save_checkpoint(epoch, False)) if out else None
                        say(f"interrupted after epoch {epoch}" +
                            (f": checkpoint {path}" if path else ""))
                        raise RunInterrupted(epoch, path)
            if epochs == 0:  # nothing to train (popularity): evaluate once
                metrics = self.evaluate(state.params, ("valid", "test"))
                selection, _, _ = protocol_lib.update(selection, 0, metrics.get("valid"),
                                                      metrics.get("test"), metric=self.metric)
                best = parallel.to_host(self.export(state.params)) if out else None
                if out and main:
                    run_dir.save_best(out, best, 0, selection.metric, selection.best_value)
        except BaseException:
            if log:
                run_dir.close_log(log)
            raise
        finally:
            bar.close()
            for closable in (writer, tensorboard, checkpointer):  # checkpointer: waits for saves
                if closable:
                    closable.close()
        result = run_result(cfg, self.model.name, self.dataset.name, selection, times,
                            compile_epochs, time.perf_counter() - t_start,
                            count_params(self.export(state.params)), stats, self.batch_size,
                            self.mesh.devices.flat)
        if out and main:
            saved = run_dir.best_epoch_saved(out)
            result["best_params"] = "best/params.npz" if saved == selection.best_epoch else None
            atomic_write_json(out / "result.json", result)
            say(f"best epoch {selection.best_epoch}: test {_brief(result['test'], metric)}; "
                f"wrote {out}")
            run_dir.close_log(log)
        self.state = state
        return result


class _Reporter:
    """train.log lines (and, with `echo`, the same above the progress bar)."""

    def __init__(self, log, echo: bool):
        self.log, self.echo = log, echo

    def __call__(self, message: str) -> None:
        if self.log:
            self.log.info(message)
        if self.echo:
            tqdm.write(message, file=sys.stderr)

    def epoch(self, line: dict, metric: str, improved: bool) -> None:
        if not self.log:
            return
        terms = "  ".join(f"{k} {v:.4g}" for k, v in line.items()
                          if k not in ("epoch", "seconds", "finite") and "/" not in k)
        text = f"epoch {line['epoch']}  {line['seconds']:.2f} s  {terms}"
        for split in ("valid", "test"):
            if f"{split}/{metric}" in line:
                text += f"  {split}/{metric} {line[f'{split}/{metric}']:.4f}"
        self.log.info(text + ("  (best)" if improved else ""))


class _InterruptFlag:
    """While entered (main thread only), the first Ctrl-C sets `requested` and the loop stops
    after the epoch in progress; a second one raises KeyboardInterrupt at once."""

    def __init__(self):
        self.requested, self._previous = False, None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        tqdm.write("Ctrl-C: stopping after this epoch and saving a checkpoint "
                   "(Ctrl-C again to abort without saving)", file=sys.stderr)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def _brief(metrics: dict, metric: str) -> str:
    return f"{metric} {metrics[metric]:.4f}" if metric in metrics else "not evaluated"


def run_result(cfg: RunConfig, model_name: str, dataset_name: str, selection, times: list,
               compile_epochs: list, wall_seconds: float, n_params: int, last_stats: dict,
               batch_size: int, devices) -> dict:
    """result.json's content (without "best_params", which the writer adds)."""
    return {
        "model": model_name,
        "dataset": dataset_name,
        **protocol_lib.selection_result(selection),
        "epochs_run": len(times),
        "step_batch_size": batch_size,
        "first_epoch_seconds": times[0] if times else 0.0,
        "epoch_seconds_median": _median_without_compiles(times, compile_epochs),
        "wall_seconds": wall_seconds,
        "n_params": n_params,
        "final_loss": float(last_stats["loss"]) if times else math.nan,
        "data_source": data_source(cfg.data),
        **run_dir.provenance(devices),
    }


def _median_without_compiles(times: list[float], compile_epochs: list[int]) -> float:
    """Median epoch time over the epochs that did not compile (all of them if none)."""
    steady = [t for epoch, t in enumerate(times, 1) if epoch not in compile_epochs]
    return statistics.median(steady or times) if times else 0.0


def _postfix(metrics: dict, metric: str) -> dict:
    out = {}
    for split in ("valid", "test"):
        if split in metrics and metric in metrics[split]:
            out[f"{split[0]}_{metric}"] = f"{metrics[split][metric]:.4f}"
    return out


def train(cfg: RunConfig, dataset: Dataset, out_dir=None, progress: bool = True,
          resume: bool = False, overwrite: bool = False) -> dict:
    """Train `cfg.model.name` on `dataset` (continue the run in `out_dir` with `resume`);
    return result.json's content."""
    distributed.initialize(cfg.distributed)
    return Trainer(cfg, dataset).run(out_dir, progress, resume=resume, overwrite=overwrite)
