"""One group of sweep members trained as ONE compiled program.

The training state of every member is stacked on a leading member axis [S, ...] (parameters,
Adam moments, RNG keys, epoch); the data (graphs, features, training pairs) is shared. Per
member: the train seed (initialisation, shuffles, negatives, dropout), the learning rate
(`optax.inject_hyperparams`: it lives in the optimizer state) and the model's continuous
hyperparameters (`Recommender.hyper`, read through `loss_with` / `init_with` as [S] arrays).
The member axis is split over the device mesh (`train.n_devices`; S must be a multiple of the
device count), and each device runs its members `train.sweep_vmap` at a time (`members`: one
after another on CPU, where every member then computes exactly its solo run; vmapped together
on accelerators).

Evaluation and model selection are per member, exactly as a solo run (`recgoat_jax.train.loop`):
each member keeps its own best-valid epoch and patience. A member that has stopped is frozen
(`active` mask, a `lax.cond`): its state stays bit-identical; run one at a time it costs
nothing, vmapped with others it costs a full member until its chunk's last member stops.
Each member writes the same files as a solo `recgoat-jax train` run (`run_dir`), with
"seconds" the group's epoch time (all members together).
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from recgoat_jax import config as config_lib
from recgoat_jax.config import RunConfig
from recgoat_jax.data import Dataset
from recgoat_jax.eval import protocol as protocol_lib
from recgoat_jax.io_utils import JsonlWriter, atomic_write_json, atomic_write_text
from recgoat_jax.models import build_model
from recgoat_jax.models.base import init_params, traced_hyper_keys, with_hyper
from recgoat_jax.sweep.members import over_mesh, vmap_chunk
from recgoat_jax.sweep.spec import SweepError, varying_keys
from recgoat_jax.train import distributed, parallel, run_dir
from recgoat_jax.train.epoch import make_epoch_fn
from recgoat_jax.train.guard import TrainingDiverged, check_epoch, plan_warning
from recgoat_jax.train.loop import count_params, make_evaluators, run_result
from recgoat_jax.train.preflight import check_run, step_batch_size
from recgoat_jax.train.state import TrainState, make_optimizer

ALWAYS_PER_MEMBER = ("train.seed", "train.lr")


class GroupTrainer:
    """Trains `cfgs` (one config per member, equal but for per-member keys) on `dataset`.

    Raises SweepError naming the key when two members differ in anything a member cannot own
    (a shape or a code path), and when the member count does not split over the devices;
    ConfigError when the config cannot run on `dataset`. `model`: built from cfgs[0] if None.
    """

    def __init__(self, cfgs: list[RunConfig], dataset: Dataset, mesh=None, model=None):
        if not cfgs:
            raise SweepError("a group needs at least one member")
        base = cfgs[0]
        distributed.initialize(base.distributed)
        check_run(base, dataset)
        if base.train.sharding != "data":
            raise SweepError(f"train.sharding = '{base.train.sharding}': a sweep splits its "
                             "members over the devices, so its members run with "
                             "train.sharding = 'data'")
        self.cfgs, self.dataset, self.size = list(cfgs), dataset, len(cfgs)
        self.mesh = mesh if mesh is not None else parallel.make_mesh(base.train.n_devices)
        n_dev = parallel.data_size(self.mesh)
        if self.size % n_dev:
            raise SweepError(f"{self.size} members cannot be split over {n_dev} devices: use a "
                             f"multiple of {n_dev} members (seeds x configurations), or set "
                             f"train.n_devices to a divisor of {self.size}")
        self.model = model or build_model(base, dataset)
        varying = varying_keys(cfgs)
        allowed = set(ALWAYS_PER_MEMBER) | set(self.model.hyper)
        for key in varying:
            if key not in allowed:
                raise SweepError(f"'{key}' differs between members of one group, but it changes "
                                 f"a shape or a code path of {self.model.name} (a member may own "
                                 f"only {sorted(allowed)}): put those members in separate groups")
        self.batch_size = step_batch_size(base.train.batch_size, len(dataset.train), 1)
        flats = [config_lib.to_flat_dict(c) for c in cfgs]
        self.member_keys = traced_hyper_keys(self.model, flats)  # as a solo run traces them
        self.values = {k: np.asarray([f[k] for f in flats], np.float32)
                       for k in self.member_keys}
        self.seeds = np.asarray([c.train.seed for c in cfgs], np.int32)
        self.lrs = np.asarray([c.train.lr for c in cfgs], np.float32)
        self.optimizer = make_optimizer(base.train)

        replicated = parallel.replicated(self.mesh)
        self.members = NamedSharding(self.mesh, P(parallel.DATA_AXIS))
        self.inputs = parallel.place(self.model.inputs, replicated)
        self.train_pairs = parallel.place(dataset.train.astype(np.int32), replicated)
        self.member_values = parallel.place(self.values, self.members)  # placed once
        model, optimizer, n_items = self.model, self.optimizer, dataset.n_items

        self.chunk = vmap_chunk(base.train.sweep_vmap, self.size // n_dev,
                                self.mesh.devices.flat[0].platform)

        def member_epoch(state, values, active, train_pairs, inputs):
            epoch = make_epoch_fn(with_hyper(model, values), optimizer, n_items,
                                  self.batch_size)

            def frozen(state):  # a stopped member keeps its state; its stats are not read
                stats = jax.eval_shape(epoch, state, train_pairs, inputs)[1]
                return state, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), stats)

            return jax.lax.cond(active, lambda s: epoch(s, train_pairs, inputs), frozen, state)

        def member_embed(params, values, inputs):
            return with_hyper(model, values).embed(params, inputs)

        def jit_members(fn, n_member, n_shared, **kw):
            """jit of fn(n_member per-member args [S, ...], n_shared shared args), called with
            the member index [S] first: it gives the member axis its size even when a model
            has no parameters (popularity)."""
            mapped = over_mesh(lambda _, *a: fn(*a), self.mesh, self.chunk, n_shared)
            return jax.jit(lambda index, *a: mapped((index, *a[:n_member]), *a[n_member:]),
                           **kw)

        self.index = parallel.place(np.arange(self.size, dtype=np.int32), self.members)
        self.epoch_fn = jit_members(member_epoch, 3, 2, donate_argnums=(1,))
        self.embed_fn = jit_members(member_embed, 2, 1)
        self.diagnostics_fn = (jit_members(model.diagnostics, 1, 0) if model.diagnostics
                               else None)
        self.evaluators = make_evaluators(dataset, base.eval, self.mesh)

    def init_state(self) -> TrainState:
        """Every member's initial state, stacked: member s equals a solo run's with its seed."""
        model, optimizer = self.model, self.optimizer

        def make(seed, lr, values):
            init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
            params = init_params(model, init_key, values)
            opt_state = optimizer.init(params)
            opt_state.hyperparams["learning_rate"] = lr
            return TrainState(params, opt_state, train_key, jnp.zeros((), jnp.int32))

        init = over_mesh(make, self.mesh, self.chunk, 0)
        return jax.jit(init)((*parallel.place((self.seeds, self.lrs), self.members),
                              self.member_values))

    def train_epoch(self, state: TrainState, active: np.ndarray):
        t0 = time.perf_counter()
        active = parallel.place(np.asarray(active, bool), self.members)
        state, stats = self.epoch_fn(self.index, state, self.member_values, active,
                                     self.train_pairs, self.inputs)
        stats = {k: np.asarray(v) for k, v in parallel.to_host(stats).items()}
        return state, stats, time.perf_counter() - t0

    def evaluate(self, params, members, splits) -> dict[int, dict]:
        """{member: {split: metrics}} for the listed members."""
        z_user, z_item = parallel.to_host(self.embed_fn(self.index, params,
                                                        self.member_values, self.inputs))
        return {s: {split: self.evaluators[split](z_user[s], z_item[s])
                    for split in splits if split in self.evaluators} for s in members}

    def diagnostics(self, params) -> dict[str, np.ndarray]:
        if self.diagnostics_fn is None:
            return {}
        diag = parallel.to_host(self.diagnostics_fn(self.index, params))
        return {k: np.asarray(v) for k, v in diag.items()}

    def run(self, out_dirs: list[Path | None], progress=None, checkpoint_dir: Path | None = None,
            checkpoint_every: int = 0, resume: bool = False) -> list[dict]:
        """Train every member until it stops (early stopping or train.epochs); each member's
        files go to its out_dirs entry. Returns the members' result dicts.

        `progress(running, best)`: called after every epoch with the number of members still
        running and the best selection value so far (for a progress bar).
        `checkpoint_dir`, `checkpoint_every`: save the stacked state and the members' records
        every that many epochs (and when the group ends); with `resume`, continue from the
        newest checkpoint that verifies there (or from scratch when there is none).
        """
        from recgoat_jax.sweep.checkpoint import GroupCheckpointer

        base = self.cfgs[0]
        ev, epochs = base.eval, base.train.epochs if self.model.trainable else 0
        state = self.init_state()
        checkpointer = GroupCheckpointer(checkpoint_dir) if checkpoint_dir and (
            checkpoint_every > 0 or resume) else None
        record, notes = {}, []
        if resume and checkpointer:
            try:
                restored, record, skipped = checkpointer.restore_latest(state, self.cfgs)
            except BaseException:  # a refusal closes the checkpointer too
                checkpointer.close()
                raise
            notes = [f"skipped checkpoint {why}" for why in skipped]
            if restored is not None:
                state = restored
        first = int(record.get("epoch", 0)) + 1
        main = distributed.is_main_process()  # only process 0 writes the members' files
        records = [_MemberRecord(cfg, out if main else None, self.model.name,
                                 record["members"][s] if record else None, first - 1, notes)
                   for s, (cfg, out) in enumerate(zip(self.cfgs, out_dirs))]
        n_params = count_params(jax.tree.map(lambda x: x[0], state.params))
        active = np.asarray(record.get("active", [True] * self.size), bool)
        every = ev.every or None
        splits = ("test",) if ev.protocol == "reference" else ("valid", "test")
        t_start = time.perf_counter()
        try:
            for epoch in range(first, epochs + 1):
                if not active.any():
                    break
                state, stats, seconds = self.train_epoch(state, active)
                diag = self.diagnostics(state.params)
                running = [s for s in range(self.size) if active[s]]
                evaluate = protocol_lib.should_evaluate(ev.protocol, epoch, every) or \
                    epoch == epochs
                metrics = self.evaluate(state.params, running, splits) if evaluate else {}
                for s in running:
                    rec = records[s]
                    member_stats = {k: float(v[s]) for k, v in stats.items()}
                    try:
                        check_epoch(epoch, member_stats)
                    except TrainingDiverged as e:  # this member stops; the others go on
                        rec.diverge(str(e))
                        active[s] = False
                        continue
                    rec.epoch(epoch, seconds, member_stats,
                              {k: float(v[s]) for k, v in diag.items()}, metrics.get(s))
                    if rec.stopped:
                        active[s] = False
                improved = [s for s in running if records[s].improved]
                if improved:  # one gather (a collective on several hosts) for all of them
                    host = parallel.to_host(state.params)
                    for s in improved:
                        records[s].save_best(jax.tree.map(lambda x: x[s], host))
                if checkpointer and checkpoint_every > 0 and (
                        epoch % checkpoint_every == 0 or epoch == epochs or not active.any()):
                    checkpointer.save(epoch, state, {
                        "epoch": epoch, "active": active.tolist(),
                        "configs": [config_lib.to_dict(c) for c in self.cfgs],
                        "members": [r.to_dict() for r in records]})
                if progress:
                    progress(int(active.sum()), max((r.selection.best_value or -np.inf)
                                                    for r in records))
            if epochs == 0:
                metrics = self.evaluate(state.params, range(self.size), ("valid", "test"))
                host = parallel.to_host(state.params)
                for s, rec in enumerate(records):
                    rec.selection, _, _ = protocol_lib.update(
                        rec.selection, 0, metrics[s].get("valid"), metrics[s].get("test"),
                        metric=base.eval.metric or None)
                    rec.save_best(jax.tree.map(lambda x: x[s], host))
        finally:
            for rec in records:
                rec.close()
            if checkpointer:
                checkpointer.close()
        wall = time.perf_counter() - t_start
        self.state = state
        return [rec.finish(self, wall, n_params) for rec in records]


class _MemberRecord:
    """One member's model selection and files (the same as a solo run's); `saved` (a
    `to_dict` from a checkpoint of epoch `epoch`) continues it."""

    def __init__(self, cfg: RunConfig, out: Path | None, model_name: str,
                 saved: dict | None = None, epoch: int = 0, notes=()):
        self.cfg, self.out = cfg, Path(out).absolute() if out else None
        self.metric = config_lib.selection_metric(cfg)
        self.selection = protocol_lib.init_early_stopping(cfg.eval.protocol)
        self.times: list[float] = []
        self.stats: dict = {}
        self.improved = self.stopped = self.plan_warned = False
        self.diverged: str | None = None  # the guard's message when the member's loss went NaN
        if saved:
            self.selection = protocol_lib.state_from_dict(saved["selection"])
            self.times, self.stats = list(saved["times"]), dict(saved["stats"])
            self.stopped = bool(saved["stopped"])
            self.diverged = saved.get("diverged")
        self.writer = self.log = None
        if self.out:
            self.out.mkdir(parents=True, exist_ok=True)
            if saved:
                run_dir.prepare(self.out, resume=True, overwrite=False)
                run_dir.keep_metric_lines(self.out / "metrics.jsonl", epoch)
            else:
                run_dir.prepare(self.out, resume=False, overwrite=True)
            self.log = run_dir.open_log(self.out, resume=bool(saved))
            atomic_write_text(self.out / "config.toml", config_lib.dumps(cfg))
            self.writer = JsonlWriter(self.out / "metrics.jsonl", "a" if saved else "w")
            for note in notes:
                self.log.info(note)
            self.log.info(f"{model_name}: sweep member (trained with its group)" +
                          (f", resumed after epoch {epoch}" if saved else ""))

    def to_dict(self) -> dict:
        return {"selection": protocol_lib.state_to_dict(self.selection),
                "times": list(self.times), "stats": dict(self.stats),
                "stopped": bool(self.stopped), "diverged": self.diverged}

    def diverge(self, message: str) -> None:
        """Stop this member after a non-finite epoch (not logged as an epoch): its selection so
        far stands, result.json says ``"diverged"``, and a sweep never chooses its config."""
        self.improved, self.stopped, self.diverged = False, True, message
        if self.log:
            self.log.info(f"diverged, stopped: {message}")

    def epoch(self, epoch: int, seconds: float, stats: dict, diag: dict, metrics) -> None:
        self.times.append(seconds)
        self.stats = stats
        line = {"epoch": epoch, "seconds": seconds, **stats, **diag}
        self.improved = False
        if metrics is not None:
            self.selection, self.improved, self.stopped = protocol_lib.update(
                self.selection, epoch, metrics.get("valid"), metrics.get("test"),
                metric=self.cfg.eval.metric or None, patience=self.cfg.eval.patience)
            line.update({f"{s}/{k}": v for s, m in metrics.items() for k, v in m.items()})
        if self.log and not self.plan_warned and (warning := plan_warning(
                epoch, stats, self.cfg.model.oat.solver)):
            self.log.info(warning)
            self.plan_warned = True
        if self.writer:
            self.writer.write(line)
            self.log.info(f"epoch {epoch}  loss {stats['loss']:.4g}" + (
                f"  valid/{self.metric} {metrics['valid'][self.metric]:.4f}"
                if metrics and self.metric in metrics.get("valid", {}) else "") +
                ("  (best)" if self.improved else ""))

    def save_best(self, params) -> None:
        if self.out:
            run_dir.save_best(self.out, params, self.selection.best_epoch,
                              self.selection.metric, self.selection.best_value)

    def close(self) -> None:
        if self.writer:
            self.writer.close()
            self.writer = None

    def finish(self, group: GroupTrainer, wall: float, n_params: int) -> dict:
        result = run_result(self.cfg, group.model.name, group.dataset.name, self.selection,
                            self.times, [1] if self.times else [], wall, n_params, self.stats,
                            group.batch_size, group.mesh.devices.flat)
        result["sweep_group_size"] = group.size
        result["diverged"] = self.diverged
        if self.out:
            saved = run_dir.best_epoch_saved(self.out)
            result["best_params"] = ("best/params.npz" if saved == self.selection.best_epoch
                                     else None)
            atomic_write_json(self.out / "result.json", result)
            self.log.info(f"best epoch {self.selection.best_epoch}; wrote {self.out}")
            run_dir.close_log(self.log)
        return result

