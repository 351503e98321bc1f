"""Training-epoch time: the PyTorch port of the public RecGOAT (benchmarks/torch_reference) against
recgoat_jax, with the same data and hyperparameters, on one machine in one process.

Per model (LightGCN: torch `lgn` / JAX `lightgcn`; RecGOAT: torch `lgn_mm` / JAX the
`recgoat-reference` preset) and embedding size d:
  * both sides are built from the same dataset and config (batch size, lr, decay, CL weights,
    temperature, kNN k, dropout, fusion weights, layers);
  * torch's reference OAT cost materialises an [I, d, d] tensor (three of them alive at the
    peak of a RecGOAT forward); when 3 I d^2 * 4 bytes exceeds 80% of the available memory that
    row is reported "does not fit" instead of run. `--torch-closed-form` adds a torch row with
    the identical O(d^2)-memory cost;
  * JAX: the compiled epoch of `recgoat_jax.train.loop.Trainer` (one `lax.scan` over the
    batches); lowering + compilation is timed apart, then one warm-up execution;
  * torch: one warm-up epoch (reported apart);
  * then `--epochs-measured` repetitions, alternating the frameworks (torch, [torch closed form],
    JAX, torch, ...), each an epoch that continues training; median, min and max.
`--max-batches N` times N batches per "epoch" (a fixed random subset of N * batch_size training
pairs; the graphs still come from the whole training set) and reports the per-epoch time
extrapolated by ceil(n_train / batch_size) / N: the output says so in every such row.

Usage (repository root):
  python3 -m benchmarks.epoch_time [--models recgoat,lightgcn] [--dims 64,256,800]
      [--preset baby | --data-format mmrec --data-path DIR] [--epochs-measured 3]
      [--max-batches 0] [--torch-closed-form] [--wait-quiet-min 40] [--out benchmarks/results]
      [--tag _smoke]
Writes <out>/epoch_time<tag>.json and .md.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import math
import time
import traceback

import numpy as np

from benchmarks import common

MODELS = {  # our name: (config file, torch model name)
    "lightgcn": ("lightgcn.toml", "lgn"),
    "recgoat": ("recgoat-reference.toml", "lgn_mm"),
}
CONFIGS = common.REPO / "experiments" / "configs"
FIT_FRACTION = 0.8  # a torch row runs if its estimated peak is below this share of MemAvailable


def per_dim(text: str, dims: list[int], name: str) -> dict[int, int]:
    """"3" -> the same value for every d; "3,3,2" -> one value per d (in --dims order)."""
    values = [int(v) for v in text.split(",")]
    if len(values) == 1:
        values = values * len(dims)
    if len(values) != len(dims):
        raise SystemExit(f"--{name}: give one value or one per --dims entry ({len(dims)}), "
                         f"got {text!r}")
    return dict(zip(dims, values))


def reference_config(cfg, closed_form: bool):
    """The torch port's ReferenceConfig holding the JAX run config's values."""
    from benchmarks.torch_reference import ReferenceConfig

    m, loss = cfg.model, cfg.loss
    return ReferenceConfig(dim=m.dim, n_layers=m.n_layers, gat_layers=m.gat_layers,
                           gat_heads=m.gat_heads, dropout=m.dropout, alpha=m.oat.alpha_image,
                           beta=m.oat.beta_text, decay=loss.decay,
                           contrastive_weight=loss.cl_weight,
                           modality_weight=loss.modality_weight, temperature=loss.temperature,
                           init_std=m.init_std, closed_form_cost=closed_form)


def torch_peak_estimate(model: str, n_items: int, dim: int, closed_form: bool) -> int:
    """Bytes of the reference cost's [I, d, d] tensors alive at once in one RecGOAT step:
    the first modality's difference tensor (kept for autograd while its cost lives), the
    second's, and the second's squared copy. 0 for what has no such tensor."""
    if model != "recgoat" or closed_form:
        return 0
    return 3 * n_items * dim * dim * 4


# --------------------------------------------------------------------------- runners

class TorchRunner:
    """One torch model + Adam; `epoch()` trains over `pairs` and returns (seconds, mean loss)."""

    def __init__(self, torch_name: str, cfg, dataset, pairs: np.ndarray, closed_form: bool):
        import torch
        from benchmarks.torch_reference import ReferenceData, build_model, make_optimizer

        t0 = time.perf_counter()
        full = ReferenceData.from_dataset(dataset)
        self.model = build_model(torch_name, full, reference_config(cfg, closed_form),
                                 knn_k=cfg.model.knn_k, seed=cfg.train.seed).train()
        self.build_s = time.perf_counter() - t0
        self.optimizer = make_optimizer(self.model, lr=cfg.train.lr)
        self.data = dataclasses.replace(full, train_users=torch.from_numpy(pairs[:, 0].astype(np.int64)),
                                        train_items=torch.from_numpy(pairs[:, 1].astype(np.int64)))
        self.generator = torch.Generator().manual_seed(cfg.train.seed)
        self.batch_size = cfg.train.batch_size

    def epoch(self) -> tuple[float, float, float]:
        """(wall seconds, process CPU seconds, mean loss) of one epoch."""
        from benchmarks.torch_reference import train_epoch

        t0, c0 = time.perf_counter(), time.process_time()
        loss = train_epoch(self.model, self.optimizer, self.data, self.batch_size, self.generator)
        return time.perf_counter() - t0, time.process_time() - c0, loss


class JaxRunner:
    """The package's Trainer; its jitted epoch lowered and compiled once for `pairs`."""

    def __init__(self, cfg, dataset, pairs: np.ndarray):
        import jax
        from recgoat_jax.train import parallel
        from recgoat_jax.models import build_model
        from recgoat_jax.train.loop import Trainer

        empty = np.zeros((0, 2), np.int32)
        t0 = time.perf_counter()
        # no evaluation here: leave the evaluators (and their device masks) out; the model is
        # built here because the run checks (`check_run`) refuse a dataset without valid / test
        train_only = dataclasses.replace(dataset, valid=empty, test=empty)
        self.trainer = Trainer(cfg, train_only, model=build_model(cfg, train_only))
        self.state = self.trainer.init_state()
        self.build_s = time.perf_counter() - t0
        self.pairs = parallel.place(pairs.astype(np.int32), parallel.replicated(self.trainer.mesh))
        t0 = time.perf_counter()
        lowered = self.trainer.epoch_fn.lower(self.state, self.pairs, self.trainer.inputs,
                                              self.trainer.hyper)
        self.lower_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.compiled = lowered.compile()
        self.compile_s = time.perf_counter() - t0
        self._block = jax.block_until_ready

    def epoch(self) -> tuple[float, float, float]:
        """(wall seconds, process CPU seconds, mean loss) of one epoch."""
        t0, c0 = time.perf_counter(), time.process_time()
        self.state, stats = self.compiled(self.state, self.pairs, self.trainer.inputs,
                                           self.trainer.hyper)
        stats = self._block(stats)
        return time.perf_counter() - t0, time.process_time() - c0, float(stats["loss"])


# --------------------------------------------------------------------------- one setting

def run_setting(model: str, dim: int, dataset, args, epochs_measured: int,
                max_batches: int) -> dict:
    """All rows of one (model, d): build, warm up, alternate measured epochs."""
    from recgoat_jax import config as config_lib

    config_file, torch_name = MODELS[model]
    overrides = [f"model.dim={dim}", "train.epochs=1"] + list(args.set or [])
    cfg = config_lib.load(CONFIGS / config_file, overrides)
    jax_cfg = config_lib.load(CONFIGS / config_file, overrides + list(args.jax_set or []))
    batch = cfg.train.batch_size
    n_train = len(dataset.train)
    full_batches = math.ceil(n_train / batch)
    timed_batches = full_batches if not max_batches or max_batches >= full_batches else max_batches
    scale = full_batches / timed_batches
    rng = np.random.default_rng(cfg.train.seed)
    pairs = dataset.train if timed_batches == full_batches else \
        dataset.train[rng.permutation(n_train)[:timed_batches * batch]]
    setting = {"model": model, "dim": dim, "batch_size": batch, "n_train": n_train,
               "batches_per_epoch": full_batches, "batches_timed": timed_batches,
               "extrapolated": timed_batches < full_batches, "epochs_measured": epochs_measured,
               "config": config_lib.to_dict(jax_cfg), "rows": []}
    print(f"== {model} d={dim}: {timed_batches} of {full_batches} batches per timed epoch",
          flush=True)

    frameworks = args.frameworks.split(",")
    variants = [("torch", "reference", False)] if "torch" in frameworks else []
    if "torch" in frameworks and args.torch_closed_form and model == "recgoat":
        variants.append(("torch", "closed-form cost", True))
    if "jax" in frameworks:
        variants.append(("jax", jax_variant_name(jax_cfg, args), None))
    runners, rows = [], []
    for framework, variant, closed_form in variants:
        row = {"framework": framework, "variant": variant, "status": "ok"}
        rows.append(row)
        try:
            if framework == "torch":
                need = torch_peak_estimate(model, dataset.n_items, dim, closed_form)
                row["memory_estimate_bytes"] = need
                available = common.memory_available()
                if need > FIT_FRACTION * available:
                    row["status"] = "does not fit"
                    row["reason"] = (f"the [I, d, d] cost tensors need ~{common.fmt_bytes(need)}; "
                                     f"{common.fmt_bytes(available)} available")
                    print(f"   torch {variant}: does not fit ({row['reason']})", flush=True)
                    runners.append(None)
                    continue
                runner = TorchRunner(torch_name, cfg, dataset, pairs, closed_form)
            else:
                runner = JaxRunner(jax_cfg, dataset, pairs)
                row["lower_s"], row["compile_s"] = runner.lower_s, runner.compile_s
            row["build_s"] = runner.build_s
            runners.append(runner)
        except Exception as e:  # noqa: BLE001 - one failing row must not end the run
            row["status"], row["reason"] = "error", f"{type(e).__name__}: {e}"
            traceback.print_exc()
            runners.append(None)

    raw = [[] for _ in runners]
    cpu = [[] for _ in runners]
    losses = [[] for _ in runners]
    for rep in range(1 + epochs_measured):  # repetition 0 is the warm-up
        for i, (runner, row) in enumerate(zip(runners, rows)):
            if runner is None:
                continue
            try:
                seconds, cpu_seconds, loss = runner.epoch()
            except Exception as e:  # noqa: BLE001
                row["status"], row["reason"] = "error", f"{type(e).__name__}: {e}"
                traceback.print_exc()
                runners[i] = None
                continue
            print(f"   {row['framework']:5s} {row['variant']:24s} "
                  f"{'warm-up' if rep == 0 else f'epoch {rep}'}: {seconds:8.2f} s "
                  f"(CPU {cpu_seconds:8.2f} s, {timed_batches} batches) loss {loss:.4f}", flush=True)
            if rep == 0:
                row["warmup_s"] = seconds * scale
                row["warmup_measured_s"] = seconds
            else:
                raw[i].append(seconds)
                cpu[i].append(cpu_seconds)
            losses[i].append(loss)
    for i, row in enumerate(rows):
        if row["status"] != "ok":
            continue
        row["measured_s"] = common.summarize(raw[i])
        row["epoch_s"] = common.summarize([s * scale for s in raw[i]])
        row["per_batch_s"] = common.summarize([s / timed_batches for s in raw[i]])
        row["epoch_cpu_s"] = common.summarize([s * scale for s in cpu[i]])
        row["losses"] = losses[i]
    reference = next((r for r in rows if r["framework"] == "torch" and r["variant"] == "reference"
                      and r["status"] == "ok"), None)
    closed = next((r for r in rows if r["variant"] == "closed-form cost" and r["status"] == "ok"),
                  None)
    for row in rows:
        if row["framework"] == "jax" and row["status"] == "ok":
            jax_median = row["epoch_s"]["median"]
            if reference:
                row["speedup_vs_torch_reference"] = reference["epoch_s"]["median"] / jax_median
            if closed:
                row["speedup_vs_torch_closed_form"] = closed["epoch_s"]["median"] / jax_median
    setting["rows"] = rows
    del runners
    gc.collect()
    return setting


def jax_variant_name(cfg, args) -> str:
    name = "recgoat_jax"
    if args.jax_set:
        name += " (" + ", ".join(args.jax_set) + ")"
    return name


# --------------------------------------------------------------------------- report

def markdown(result: dict) -> str:
    meta = result["meta"]
    text = common.run_header("Epoch time: PyTorch reference port vs recgoat_jax", meta)
    text += "\n" + common.load_warning(
        [meta["load"]["before"]], [meta["load"]["after"]] + [s["load_after"] for s in
                                                             result["settings"]],
        meta["threads"].get("busy_threads", meta["machine"]["cpus_usable"]))
    m, th, ds = meta["machine"], meta["threads"], meta["dataset"]
    text += (f"\nMachine: {m['cpu_model']}, {m['cpus_usable']} usable CPUs (os.cpu_count "
             f"{m['cpu_count']}), {m['memory_total_gib']} GiB memory"
             + (f", accelerators: {', '.join(m['gpus'])}" if m["gpus"] else ", no accelerator")
             + f".  \nThreads: torch {th.get('torch_num_threads')} intra-op / "
             f"{th.get('torch_num_interop_threads')} inter-op; XLA CPU intra-op pool "
             f"{th['xla_intra_op_threads']} (usable CPUs unless XLA_FLAGS sets it)"
             + (f"; env {th['env']}" if th["env"] else "") + ".  \n"
             f"Versions: {', '.join(f'{k} {v}' for k, v in m['versions'].items())}.  \n"
             f"Data: {ds['name']} ({ds['source']}): {ds['users']} users, {ds['items']} items, "
             f"{ds['train']} training pairs; features "
             f"{', '.join(f'{k} {v}' for k, v in ds['features'].items())}.\n\n")
    text += ("Per-epoch time: median (min-max) over the measured epochs, which alternate between "
             "the frameworks. CPU time = the process's user + system time over the epoch (all "
             "threads; median). Warm-up = the first epoch (JAX: the first execution after "
             "compilation); compile = JAX lowering + XLA compilation of the whole epoch. "
             "Rows marked * timed only `batches` batches per epoch and extrapolated to the full "
             "epoch (x batches/epoch / batches timed).\n\n")
    rows = []
    for s in result["settings"]:
        for r in s["rows"]:
            star = "*" if s["extrapolated"] else ""
            if r["status"] != "ok":
                rows.append([s["model"], s["dim"], r["framework"], r["variant"], "-", "-", "-",
                             "-", "-", "-", f"**{r['status']}**: {r.get('reason', '')}"])
                continue
            e = r["epoch_s"]
            speed = []
            if "speedup_vs_torch_reference" in r:
                speed.append(f"{r['speedup_vs_torch_reference']:.2f}x vs reference")
            if "speedup_vs_torch_closed_form" in r:
                speed.append(f"{r['speedup_vs_torch_closed_form']:.2f}x vs closed form")
            compile_s = r.get("lower_s", 0) + r.get("compile_s", 0) if r["framework"] == "jax" \
                else None
            rows.append([s["model"], s["dim"], r["framework"], r["variant"],
                         f"{s['batches_timed']}/{s['batches_per_epoch']}{star}",
                         f"{common.fmt_seconds(e['median'])}{star} "
                         f"({common.fmt_seconds(e['min'])}-{common.fmt_seconds(e['max'])})",
                         common.fmt_seconds(r["per_batch_s"]["median"]),
                         f"{common.fmt_seconds(r['epoch_cpu_s']['median'])}{star}",
                         f"{common.fmt_seconds(r['warmup_s'])}{star}",
                         common.fmt_seconds(compile_s),
                         "; ".join(speed) + (" " if speed else "")
                         + f"losses {', '.join(f'{x:.4f}' for x in r['losses'])}"])
    text += common.md_table(["model", "d", "framework", "variant", "batches", "epoch median (min-max)",
                             "per batch", "CPU time / epoch", "warm-up", "compile",
                             "speed-up / notes"], rows)
    if any(s["extrapolated"] for s in result["settings"]):
        text += ("\n\\* extrapolated: these rows timed a fixed subset of the batches of an epoch "
                 "(column `batches`) and multiplied by batches/epoch / batches timed.\n")
    if result.get("skipped"):
        text += "\nSkipped: " + "; ".join(result["skipped"]) + "\n"
    return text


def dataset_summary(ds) -> dict:
    return {"name": ds.name, "source": ds.source, "users": ds.n_users, "items": ds.n_items,
            "train": int(len(ds.train)),
            "features": {k: int(v.shape[1]) for k, v in ds.item_features.items()}}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="recgoat,lightgcn", help="comma list: recgoat, lightgcn")
    parser.add_argument("--dims", default="64,256,800", help="comma list of embedding sizes")
    common.add_data_args(parser)
    parser.add_argument("--epochs-measured", default="3",
                        help="measured epochs per framework after the warm-up: one value or one "
                             "per --dims entry (e.g. 3,3,2)")
    parser.add_argument("--max-batches", default="0",
                        help="time only this many batches per epoch and extrapolate (0: whole "
                             "epochs); one value or one per --dims entry")
    parser.add_argument("--torch-closed-form", action="store_true",
                        help="add a torch row with the O(d^2)-memory closed-form OAT cost")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="config override for both frameworks (e.g. train.batch_size=2048)")
    parser.add_argument("--jax-set", action="append", metavar="KEY=VALUE",
                        help="JAX-only override that keeps the computation (e.g. "
                             "loss.infonce_block=1024); named in the JAX row")
    parser.add_argument("--frameworks", default="torch,jax",
                        help="comma list: torch (the PyTorch port, on CPU) and jax; jax alone "
                             "where the port cannot run on the device being measured")
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--wait-quiet-min", type=float, default=0.0,
                        help=f"first wait up to this many minutes for a 1-minute load average "
                             f"below {common.QUIET_LOAD}")
    parser.add_argument("--out", default=str(common.RESULTS))
    parser.add_argument("--tag", default="", help="suffix of the output files")
    args = parser.parse_args(argv)

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; expected some of {sorted(MODELS)}")
    dims = [int(d) for d in args.dims.split(",")]
    epochs = per_dim(args.epochs_measured, dims, "epochs-measured")
    max_batches = per_dim(args.max_batches, dims, "max-batches")

    unknown = sorted(set(args.frameworks.split(",")) - {"torch", "jax"})
    if unknown:
        raise SystemExit(f"--frameworks: unknown {unknown}; expected torch and/or jax")
    import jax  # noqa: F401 - imported here so that machine/thread info can see both
    if "torch" in args.frameworks.split(","):
        import torch
        if args.torch_threads:
            torch.set_num_threads(args.torch_threads)

    load = common.start_run(args.wait_quiet_min)
    dataset = common.load_dataset(args.preset, args.data_format, args.data_path, args.data_name)
    result = {"meta": {"command": common.command_line(), "machine": common.machine_info(),
                       "threads": {**common.thread_info(), "busy_threads": common.busy_threads()},
                       "dataset": dataset_summary(dataset),
                       "load": load, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
              "settings": [], "skipped": []}
    for model in models:
        for dim in dims:
            setting = run_setting(model, dim, dataset, args, epochs[dim], max_batches[dim])
            setting["load_after"] = common.load_average()
            result["settings"].append(setting)
            for r in setting["rows"]:
                if r["status"] != "ok":
                    result["skipped"].append(f"{model} d={dim} {r['framework']} {r['variant']}: "
                                             f"{r['status']} ({r.get('reason', '')})")
    return common.finish_run(args.out, f"epoch_time{args.tag}", result, markdown, load)


if __name__ == "__main__":
    main()
