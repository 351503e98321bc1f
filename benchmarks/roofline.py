"""Roofline of a training epoch: how far the measured JAX epoch is from what this machine's
arithmetic and memory allow.

Per setting (model, d, dataset):
  1. work, counted analytically from the config and the dataset's sizes, per component and per
     batch (forward + backward): dense-matmul FLOPs, other FLOPs, exponentials, random numbers
     (dropout masks), streamed bytes, gathered bytes (random-row access: graph gathers and
     scatters, batch rows), and the bytes of B x B matrices when they are materialised
     (InfoNCE); times the batches of an epoch. Components: LightGCN propagation, modality
     projections, GAT layers, OAT (cost, Sinkhorn, aligned output), fusion, InfoNCE terms, BPR
     / L2 / batch gathers, Adam;
  2. cross-check: XLA's cost analysis of the compiled training step (flops, transcendentals,
     bytes accessed) times the batches; XLA's analysis of the compiled whole-epoch `lax.scan`
     counts the loop body once, which the output shows next to it;
  3. this machine's rates, measured here with jax/numpy microbenchmarks: f32 matmul GFLOP/s
     (2048^3, and the 4096 x d x 4096 InfoNCE shape), exp throughput (cache-resident), memory
     bandwidth (the best of numpy copy, jax triad and jax sum over 256 MiB), gather bandwidth
     (random rows of an [N, d] table), Bernoulli random numbers per second;
  4. the floor per component = max(matmul FLOPs / matmul rate + exps / exp rate + random
     numbers / rng rate, (streamed + gathered bytes) / memory bandwidth),
     summed over components: compulsory-traffic floor (B x B matrices kept in cache or
     blocked) and materialised floor (every B x B matrix written to and read from memory);
  5. the measured JAX epoch from the epoch_time JSON (`--epoch-json`), and its ratio to the floor;
  6. with `--components`: each component's measured forward + backward time in JAX (value and
     gradient, 5 chained calls in one compiled scan, median of 3: `scanned_seconds`), beside
     its floor, and the measured single training step.

Usage (repository root):
  python3 -m benchmarks.roofline [--models recgoat,lightgcn] [--dims 64,256,800] [--preset baby]
      [--epoch-json benchmarks/results/epoch_time.json] [--components] [--out benchmarks/results]
Writes <out>/roofline<tag>.json and .md.
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import time

import numpy as np

from benchmarks import common

KINDS = ("matmul_flops", "other_flops", "exps", "randoms", "stream_bytes", "gather_bytes",
         "bxb_bytes")
F32 = 4


# --------------------------------------------------------------------------- analytic counts

def sizes_of(cfg, dataset, inputs) -> dict:
    """The sizes the counts depend on. inputs: the model's input pytree (graphs, features)."""
    s = {"U": dataset.n_users, "I": dataset.n_items, "N": dataset.n_users + dataset.n_items,
         "d": cfg.model.dim, "L": cfg.model.n_layers, "B": cfg.train.batch_size,
         "n_train": len(dataset.train),
         "nnz": int(len(inputs["graph"].senders)) if "graph" in inputs else 0,
         "H": cfg.model.gat_heads, "gat_layers": cfg.model.gat_layers,
         "S": cfg.model.oat.iterations, "modalities": {}}
    for m, x in inputs.get("features", {}).items():
        x = getattr(x, "x", x)  # a FeatureTable's rows
        s["modalities"][m] = {"f": int(x.shape[1]), "E": int(len(inputs["knn"][m][0]))}
    s["n_batches"] = math.ceil(s["n_train"] / s["B"])
    return s


def _zero() -> dict:
    return dict.fromkeys(KINDS, 0.0)


def count_batch(model: str, cfg, s: dict, n_params: int) -> dict[str, dict]:
    """{component: {kind: amount}} for one training step (forward + backward), float32."""
    d, I, N, B, L = s["d"], s["I"], s["N"], s["B"], s["L"]
    c: dict[str, dict] = {}
    if L > 0:  # gather x[senders] * w, segment_sum; backward: the transposed propagation
        p = c["propagation"] = _zero()
        p["other_flops"] = 2 * (2 * L * s["nnz"] * d) + 2 * (L + 1) * N * d
        p["gather_bytes"] = 2 * L * s["nnz"] * d * F32
        p["stream_bytes"] = 2 * (L * (s["nnz"] * 3 * 4 + 2 * N * d * F32) + (L + 1) * N * d * F32)
    mods = s["modalities"] if model == "recgoat" else {}
    for m, ms in mods.items():
        f, E, H = ms["f"], ms["E"], s["H"]
        p = c[f"projection[{m}]"] = _zero()
        p["matmul_flops"] = 2 * (2 * I * f * d)  # forward, and the kernel's gradient
        p["stream_bytes"] = 2 * I * f * F32 + 2 * f * d * F32 + 2 * I * d * F32
        g = c[f"gat[{m}]"] = _zero()
        layers = s["gat_layers"]
        g["matmul_flops"] = layers * 3 * (2 * I * d * d)  # forward, input and kernel gradients
        g["other_flops"] = layers * 3 * (4 * I * d + 7 * E * H + 2 * E * d)
        g["exps"] = layers * E * H
        g["randoms"] = layers * (I * d + E * H + I * d)  # feature, attention, output dropout
        g["gather_bytes"] = layers * 3 * (3 * E * H + E * d) * F32
        g["stream_bytes"] = layers * (12 * I * d * F32 + E * (4 * H * F32 + 8))
        o = c[f"oat[{m}]"] = _zero()
        # cost (no gradient: the plan is stop-gradient), aligned forward, its two gradients
        o["matmul_flops"] = 2 * I * d * d + 3 * (2 * I * d * d)
        o["other_flops"] = 4 * s["S"] * d * d + 10 * I * d
        o["exps"] = d * d
        o["stream_bytes"] = 8 * I * d * F32 + 2 * s["S"] * d * d * F32
    if mods:
        fu = c["fusion"] = _zero()
        fu["other_flops"] = 2 * (len(mods) + 1) * I * d + 30 * I * d
        fu["stream_bytes"] = (2 * len(mods) + 12) * I * d * F32
        fu["randoms"] = I * d
        fu["exps"] = I  # LayerNorm rsqrt
    n_cl = infonce_terms(cfg, len(mods)) if model == "recgoat" else 0
    if n_cl:
        x = c[f"infonce x{n_cl}"] = _zero()
        x["matmul_flops"] = n_cl * 3 * (2 * B * B * d)  # logits; gradients of both sides
        x["other_flops"] = n_cl * 10 * B * B
        x["exps"] = n_cl * B * B
        x["stream_bytes"] = n_cl * 8 * B * d * F32
        x["bxb_bytes"] = n_cl * 5 * B * B * F32  # logits written/read, gradient written/read
    lo = c["bpr/l2/batch rows"] = _zero()
    rows = 3 + (2 + 2 * len(mods) + 1 if mods else 0)  # u, pos, neg (+ CL rows) [B, d] each
    lo["gather_bytes"] = 2 * rows * B * d * F32  # gather forward, scatter-add backward
    lo["other_flops"] = 20 * B * d
    lo["exps"] = 2 * B
    ad = c["adam"] = _zero()
    ad["other_flops"] = 12 * n_params
    ad["exps"] = n_params  # the square root of the second moment (XLA counts it as one)
    ad["stream_bytes"] = 8 * n_params * F32  # read p, g, m, v; write p, m, v; zero dense grads
    return c


def infonce_terms(cfg, n_modalities: int) -> int:
    """InfoNCE evaluations per step of the configured contrastive loss."""
    kind = cfg.loss.contrastive
    if kind == "none" or n_modalities == 0:
        return 0 if kind == "none" else 1
    if kind == "reference":  # user-item + (cf, m) and (m1, m2) pairs, at positives and negatives
        pairs = n_modalities + n_modalities * (n_modalities - 1) // 2
        return 1 + 2 * pairs
    return 1 + n_modalities  # cmcl


def floor_seconds(counts: dict, rates: dict, materialised: bool) -> float:
    compute = (counts["matmul_flops"] / rates["matmul_flops_per_s"]
               + counts["exps"] / rates["exps_per_s"] + counts["randoms"] / rates["randoms_per_s"])
    # gathered rows are 256 B or more of contiguous floats: the memory system can deliver them
    # at streaming bandwidth; XLA's gather/scatter reaches far less (gather_bytes_per_s, shown
    # beside the table), which is this software's shortfall, not a limit of the machine
    memory = (counts["stream_bytes"] + counts["gather_bytes"]
              + (counts["bxb_bytes"] if materialised else 0)) / rates["bandwidth_bytes_per_s"]
    return max(compute, memory)


def floors_of(setting: dict, rates: dict) -> dict:
    """floor_per_batch {component: {compulsory, materialised, bound}}, floor_batch_s and
    floor_epoch_s {compulsory, materialised} of a setting's counts under `rates`."""
    floors = {name: {"compulsory": floor_seconds(c, rates, False),
                     "materialised": floor_seconds(c, rates, True),
                     "bound": bound_of(c, rates, False)}
              for name, c in setting["per_batch"].items()}
    batch = {kind: sum(f[kind] for f in floors.values()) for kind in ("compulsory", "materialised")}
    return {"floor_per_batch": floors, "floor_batch_s": batch,
            "floor_epoch_s": {k: v * setting["sizes"]["n_batches"] for k, v in batch.items()}}


def bound_of(counts: dict, rates: dict, materialised: bool) -> str:
    compute = (counts["matmul_flops"] / rates["matmul_flops_per_s"]
               + counts["exps"] / rates["exps_per_s"] + counts["randoms"] / rates["randoms_per_s"])
    return "compute" if compute >= floor_seconds(counts, rates, materialised) else "memory"


# --------------------------------------------------------------------------- machine rates

def _best_time(fn, reps: int = 7) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _bandwidths(big: int) -> dict[str, float]:
    """Memory bandwidth (bytes/s) of three streaming kernels over `big` float32 values; the
    arrays are freed when this returns."""
    import jax
    import jax.numpy as jnp

    src = np.ones(big, np.float32)
    dst = np.empty_like(src)
    t = _best_time(lambda: np.copyto(dst, src), reps=5)
    bandwidth = {"numpy_copy": 2 * big * F32 / t}
    u = jnp.ones(big, jnp.float32)
    w = jnp.full(big, 2.0, jnp.float32)
    triad = jax.jit(lambda p, q: p + 3.0 * q)
    t = _best_time(lambda: triad(u, w).block_until_ready(), reps=5)
    bandwidth["jax_triad"] = 3 * big * F32 / t
    total = jax.jit(jnp.sum)
    t = _best_time(lambda: total(u).block_until_ready(), reps=5)
    bandwidth["jax_sum"] = big * F32 / t
    return bandwidth


def measure_rates(quick: bool = False) -> dict:
    """This machine's rates (best of several runs: a floor assumes the best the machine did).
    quick: smaller problems, for checking the script only (the rates are then not
    representative)."""
    import jax
    import jax.numpy as jnp

    key = jax.random.PRNGKey(0)
    out = {}
    square = 512 if quick else 2048
    a = jax.random.normal(key, (square, square), jnp.float32)
    mm = jax.jit(lambda x, y: x @ y)
    t = _best_time(lambda: mm(a, a).block_until_ready())
    out["matmul_flops_per_s"] = 2 * square**3 / t
    out["matmul_square"] = square
    for dim in (() if quick else (64, 256, 800)):
        x = jax.random.normal(key, (4096, dim), jnp.float32)
        t = _best_time(lambda: mm(x, x.T).block_until_ready())
        out[f"matmul_4096x{dim}x4096_flops_per_s"] = 2 * 4096 * 4096 * dim / t
    x = jax.random.normal(key, (1 << 20,), jnp.float32)  # 4 MiB: cache-resident
    ex = jax.jit(lambda v: jnp.sum(jnp.exp(v)))
    t = _best_time(lambda: ex(x).block_until_ready(), reps=20)
    out["exps_per_s"] = x.size / t
    bandwidth = _bandwidths(big=1 << (20 if quick else 26))  # 2**26: 256 MiB of float32
    out["bandwidth_detail_bytes_per_s"] = bandwidth
    out["bandwidth_bytes_per_s"] = max(bandwidth.values())
    # the graph primitive: gather random rows, weight them, sum them into sorted segments
    n_rows, n_edges = 26495, 1 << 18
    table = jax.random.normal(key, (n_rows, 64), jnp.float32)
    senders = jax.random.randint(key, (n_edges,), 0, n_rows)
    receivers = jnp.sort(jax.random.randint(jax.random.PRNGKey(1), (n_edges,), 0, n_rows))
    weights = jnp.ones(n_edges, jnp.float32)
    gather = jax.jit(lambda tb, s, r, w: jax.ops.segment_sum(
        tb[s] * w[:, None], r, n_rows, indices_are_sorted=True))
    t = _best_time(lambda: gather(table, senders, receivers, weights).block_until_ready(),
                   reps=10)
    out["gather_bytes_per_s"] = n_edges * 64 * F32 / t
    bern = jax.jit(lambda k: jax.random.bernoulli(k, 0.9, (1 << 22,)))
    t = _best_time(lambda: bern(key).block_until_ready(), reps=5)
    out["randoms_per_s"] = (1 << 22) / t
    return out


# --------------------------------------------------------------------------- XLA and components

def xla_costs(trainer) -> dict:
    """XLA's cost analysis of one compiled training step and of the compiled epoch."""
    import jax
    import jax.numpy as jnp
    from recgoat_jax.models.base import Batch
    from recgoat_jax.train.epoch import make_train_step

    state = trainer.init_state()
    B = trainer.cfg.train.batch_size
    pairs = trainer.dataset.train[np.random.default_rng(0).permutation(len(trainer.dataset.train))[:B]]
    negatives = np.random.default_rng(1).integers(0, trainer.dataset.n_items, len(pairs))
    pad = B - len(pairs)
    batch = Batch(*(jnp.asarray(np.pad(v, (0, pad)), jnp.int32)
                    for v in (pairs[:, 0], pairs[:, 1], negatives)),
                  jnp.arange(B) < len(pairs))
    step = jax.jit(make_train_step(trainer.model, trainer.optimizer))
    t0 = time.perf_counter()
    compiled = step.lower(state.params, state.opt_state, trainer.inputs, batch,
                          jax.random.PRNGKey(1)).compile()
    compile_s = time.perf_counter() - t0
    out = {"step": _pick(compiled.cost_analysis()), "step_compile_s": compile_s}
    epoch = trainer.lower_epoch(state).compile()
    out["epoch_as_reported"] = _pick(epoch.cost_analysis())
    args = (state.params, state.opt_state, trainer.inputs, batch, jax.random.PRNGKey(2))
    times = []
    for _ in range(4):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    out["step_measured_s"] = statistics.median(times[1:])
    return out


def _pick(ca) -> dict:
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    return {k: float(ca.get(k, 0.0)) for k in ("flops", "transcendentals", "bytes accessed")}


def scanned_seconds(fn, first, *rest, reps: int = 5, runs: int = 3) -> float:
    """Seconds per call of fn(first, *rest) (any pytree out), timed as a `lax.scan` of `reps`
    chained calls in ONE executable, median of `runs` after a compile + warm-up run.

    Inside the scan the temporaries are allocated once, as in the training epoch's scan; a
    lone jitted call pays first-touch page faults on every fresh [E, d] or [B, B] buffer,
    which inflated isolated timings 2-6x on this machine. Each call's input depends on the
    previous output (+ 0 * its sum), so XLA can neither hoist nor overlap the calls.
    """
    import jax
    import jax.numpy as jnp

    def chained(first, *rest):
        def body(carry, _):
            shifted = jax.tree.map(
                lambda x: x + carry.astype(x.dtype) if jnp.issubdtype(x.dtype, jnp.floating)
                else x, first)
            out = fn(shifted, *rest)
            total = sum(jnp.sum(leaf) for leaf in jax.tree.leaves(out))
            return carry + 0.0 * total, None

        return jax.lax.scan(body, jnp.zeros((), jnp.float32), None, length=reps)[0]

    run = jax.jit(chained)
    jax.block_until_ready(run(first, *rest))
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        jax.block_until_ready(run(first, *rest))
        times.append((time.perf_counter() - t0) / reps)
    return statistics.median(times)


def component_times(model: str, cfg, trainer, s: dict) -> dict[str, float]:
    """Measured forward + backward seconds of each component, one batch: value and gradient
    (so the forward pass is live) with the model's own kernels and graphs (`scanned_seconds`)."""
    import jax
    import jax.numpy as jnp
    from recgoat_jax import losses
    from recgoat_jax.graph.bipartite import lightgcn_propagate
    from recgoat_jax.graph.gat import ModalityBranch
    from recgoat_jax.ot.cost import feature_cost
    from recgoat_jax.models.registry import plan_options
    from recgoat_jax.ot.plan import transport_plan

    key = jax.random.PRNGKey(0)
    inputs, d, I, B = trainer.inputs, s["d"], s["I"], s["B"]
    out = {}
    # every output is weighted by a random [rows, d] R before summing, so that XLA can neither
    # drop unused columns nor turn a gradient of sum(x @ K) into column sums
    r_item = jax.random.normal(jax.random.PRNGKey(7), (I, d))

    def fwd_bwd(loss, argnums=0):
        return jax.value_and_grad(loss, argnums=argnums)

    if s["L"] > 0:
        x0 = 0.1 * jax.random.normal(key, (s["N"], d))
        r_node = jax.random.normal(jax.random.PRNGKey(8), (s["N"], d))
        out["propagation"] = scanned_seconds(fwd_bwd(
            lambda x, g, r: jnp.sum(lightgcn_propagate(g, x, s["L"]) * r)), x0, inputs["graph"],
            r_node)
    if model == "recgoat":
        m_cfg = cfg.model
        for m in s["modalities"]:
            branch = ModalityBranch(dim=d, n_layers=m_cfg.gat_layers, heads=m_cfg.gat_heads,
                                    feat_drop=m_cfg.feat_dropout, attn_drop=m_cfg.attn_dropout,
                                    dropout=m_cfg.dropout)
            x, knn = inputs["features"][m], inputs["knn"][m]
            params = branch.init(key, x, knn[0], knn[1], True)
            proj_only = {"params": {"proj": params["params"]["proj"]}}

            def branch_loss(p, x, knn, r, net=branch):
                z = net.apply(p, x, knn[0], knn[1], False, *knn[2:], rngs={"dropout": key})
                return jnp.sum(jnp.tanh(z) * r)  # nonlinear: the gradient needs the forward

            out[f"projection+gat[{m}]"] = scanned_seconds(fwd_bwd(branch_loss), params, x, knn,
                                                          r_item)
            projection = ModalityBranch(dim=d, n_layers=0)  # the same `proj` layer alone
            out[f"projection[{m}]"] = scanned_seconds(
                fwd_bwd(functools.partial(branch_loss, net=projection)), proj_only, x, knn, r_item)
            z = 0.1 * jax.random.normal(key, (I, d))
            z_cf = 0.05 * jax.random.normal(jax.random.PRNGKey(1), (I, d))
            delta = 0.01 * jax.random.normal(key, (d, d))
            oat_cfg = m_cfg.oat

            def oat(z, z_cf, delta, r):
                plan = transport_plan(feature_cost(z, z_cf, oat_cfg.cost_scale),
                                      plan_options(oat_cfg))
                return jnp.sum((z @ (plan + delta)) * r)

            out[f"oat[{m}]"] = scanned_seconds(fwd_bwd(oat, argnums=(0, 1, 2)), z, z_cf, delta,
                                               r_item)
        n_cl = infonce_terms(cfg, len(s["modalities"]))
        a = jax.random.normal(key, (B, d))
        b = jax.random.normal(jax.random.PRNGKey(2), (B, d))
        mask = jnp.ones(B, bool)
        one = scanned_seconds(fwd_bwd(lambda a, b: losses.infonce(
            a, b, cfg.loss.temperature, mask, cfg.loss.infonce_block), argnums=(0, 1)), a, b)
        out[f"infonce x{n_cl}"] = n_cl * one
        out["infonce (one term)"] = one
    return out


# --------------------------------------------------------------------------- report

def epoch_measurement(path: str, model: str, dim: int, dataset) -> dict | None:
    """The JAX row of the epoch_time JSON for this setting (same dataset sizes), if any."""
    import json
    from pathlib import Path

    for one in (path or "").split(","):
        if not one or not Path(one).exists():
            continue
        data = json.loads(Path(one).read_text())
        ds = data["meta"]["dataset"]
        if (ds["users"], ds["items"], ds["train"]) != (dataset.n_users, dataset.n_items,
                                                       len(dataset.train)):
            continue
        found = _jax_row(data, model, dim, one)
        if found:
            return found
    return None


def _jax_row(data: dict, model: str, dim: int, path: str) -> dict | None:
    for s in data["settings"]:
        if s["model"] == model and s["dim"] == dim:
            for r in s["rows"]:
                if r["framework"] == "jax" and r["status"] == "ok" and \
                        r["variant"] == "recgoat_jax":
                    return {"epoch_s": r["epoch_s"]["median"], "extrapolated": s["extrapolated"],
                            "source": str(path)}
    return None


def infonce_shape_note(setting: dict, rates: dict) -> str:
    """The InfoNCE floor with its forward product at the measured rate of its own shape.

    Of a term's three products, the forward logits a b^T ([B, d] x [d, B]) contracts over d
    only, and a CPU runs it far below the square-matmul rate the table's floor assumes; the
    two backward products contract over B and run at about the square rate.
    """
    sz, comp = setting["sizes"], setting.get("component_seconds", {})
    name = next((n for n in setting["per_batch"] if n.startswith("infonce x")), None)
    rate = rates.get(f"matmul_4096x{sz['d']}x4096_flops_per_s")
    if name is None or rate is None or sz["B"] != 4096:
        return ""
    cnt = setting["per_batch"][name]
    floor = (cnt["matmul_flops"] / 3 / rate + 2 * cnt["matmul_flops"] / 3
             / rates["matmul_flops_per_s"] + cnt["exps"] / rates["exps_per_s"])
    text = (f"\nInfoNCE with its forward product at the measured rate of that shape (B x d x B "
            f"= 4096 x {sz['d']} x 4096: {rate / 1e9:.0f} GFLOP/s, against "
            f"{rates['matmul_flops_per_s'] / 1e9:.0f} at 2048^3; the two backward products "
            f"contract over B and keep the square rate): floor {common.fmt_seconds(floor)}")
    if name in comp:
        text += f"; measured {common.fmt_seconds(comp[name])} = {comp[name] / floor:.1f}x of it"
    return text + ".\n"


def markdown(result: dict) -> str:
    meta = result["meta"]
    text = common.run_header("Roofline of the training epoch", meta)
    text += "\n" + common.load_warning([meta["load"]["before"]], [meta["load"]["after"]],
                                       meta["threads"].get("busy_threads",
                                                           meta["machine"]["cpus_usable"]))
    r = meta["rates"]
    bw = ", ".join(f"{k} {v / 1e9:.1f}" for k, v in r["bandwidth_detail_bytes_per_s"].items())
    text += (f"\nMachine: {meta['machine']['cpu_model']}, {meta['machine']['cpus_usable']} usable "
             f"CPUs, XLA intra-op threads {meta['threads']['xla_intra_op_threads']}"
             + (f" (env {meta['threads']['env']})" if meta['threads']['env'] else "") +
             f". Measured rates (best of several runs): f32 matmul "
             f"{r['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s at {r.get('matmul_square', 2048)}^3"
             + (" (" + ", ".join(f"{v / 1e9:.0f} at {k[len('matmul_'):-len('_flops_per_s')]}"
                                 for k, v in r.items() if k.startswith("matmul_4096x")) + ")"
                if any(k.startswith("matmul_4096x") for k in r) else "") +
             f"; exp "
             f"{r['exps_per_s'] / 1e9:.2f} G/s; memory bandwidth "
             f"{r['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s (best of {bw} GB/s); gather "
             f"{r['gather_bytes_per_s'] / 1e9:.1f} GB/s (XLA's own gather + sorted segment-sum "
             f"of 64-float rows, the primitive of the graph layers; the floor counts gathered "
             f"bytes at the memory bandwidth instead, since rows of >= 256 contiguous bytes can "
             f"stream at it); Bernoulli random numbers "
             f"{r['randoms_per_s'] / 1e9:.2f} G/s.\n\n"
             "Floor per component = max(matmul FLOPs / matmul rate + exps / exp rate + random "
             "numbers / rng rate, (streamed + gathered bytes) / memory bandwidth); "
             "'compulsory' keeps the B x B InfoNCE matrices in cache (blocked), 'materialised' "
             "streams each through memory. XLA counts are its cost analysis of ONE compiled "
             "training step x batches per epoch (its analysis of the compiled epoch counts the "
             "scan body once: shown as 'epoch as reported').\n")
    for s in result["settings"]:
        sz = s["sizes"]
        text += (f"\n## {s['model']}, d = {sz['d']}\n\nU {sz['U']}, I {sz['I']}, B {sz['B']}, "
                 f"{sz['n_batches']} batches/epoch, graph edges {sz['nnz']}, "
                 + ", ".join(f"{m}: f {v['f']}, kNN edges {v['E']}"
                             for m, v in sz["modalities"].items()) + "\n\n")
        rows = []
        comp = s.get("component_seconds", {})
        for name, cnt in s["per_batch"].items():
            measured = comp.get(name)
            if measured is None and name.startswith("gat["):
                m = name[4:-1]
                both, proj = comp.get(f"projection+gat[{m}]"), comp.get(f"projection[{m}]")
                measured = None if both is None or proj is None else both - proj
            rows.append([name, f"{cnt['matmul_flops'] / 1e9:.2f}", f"{cnt['other_flops'] / 1e9:.2f}",
                         f"{cnt['exps'] / 1e6:.1f}", f"{cnt['randoms'] / 1e6:.1f}",
                         f"{(cnt['stream_bytes'] + cnt['gather_bytes']) / 1e6:.0f}",
                         f"{cnt['bxb_bytes'] / 1e6:.0f}",
                         common.fmt_seconds(s["floor_per_batch"][name]["compulsory"]),
                         common.fmt_seconds(s["floor_per_batch"][name]["materialised"]),
                         s["floor_per_batch"][name]["bound"],
                         common.fmt_seconds(measured) if measured is not None else "-",
                         f"{measured / s['floor_per_batch'][name]['compulsory']:.1f}x"
                         if measured is not None else "-"])
        t = s["totals_per_batch"]
        rows.append(["**total / batch**", f"{t['matmul_flops'] / 1e9:.2f}",
                     f"{t['other_flops'] / 1e9:.2f}", f"{t['exps'] / 1e6:.1f}",
                     f"{t['randoms'] / 1e6:.1f}",
                     f"{(t['stream_bytes'] + t['gather_bytes']) / 1e6:.0f}",
                     f"{t['bxb_bytes'] / 1e6:.0f}",
                     common.fmt_seconds(s["floor_batch_s"]["compulsory"]),
                     common.fmt_seconds(s["floor_batch_s"]["materialised"]), "",
                     common.fmt_seconds(s["xla"]["step_measured_s"]) + " (whole step)"
                     if s.get("xla") else "-",
                     f"{s['xla']['step_measured_s'] / s['floor_batch_s']['compulsory']:.1f}x"
                     if s.get("xla") else "-"])
        text += common.md_table(["component (per batch, fwd+bwd)", "matmul GFLOP", "other GFLOP",
                                 "exps (M)", "randoms (M)", "MB streamed+gathered",
                                 "B x B MB", "floor (compulsory)", "floor (materialised)",
                                 "bound", "measured JAX", "measured / floor"], rows)
        text += infonce_shape_note(s, r)
        x = s.get("xla")
        if x:
            nb = sz["n_batches"]
            text += ("\nPer epoch: analytic vs XLA (one step x batches; 'epoch as reported' = "
                     "XLA's own analysis of the compiled scan):\n\n")
            text += common.md_table(
                ["quantity", "analytic", "XLA step x batches", "XLA epoch as reported"],
                [["FLOPs (all)", f"{(t['matmul_flops'] + t['other_flops']) * nb:.3e}",
                  f"{x['step']['flops'] * nb:.3e}", f"{x['epoch_as_reported']['flops']:.3e}"],
                 ["transcendentals / exps", f"{t['exps'] * nb:.3e}",
                  f"{x['step']['transcendentals'] * nb:.3e}",
                  f"{x['epoch_as_reported']['transcendentals']:.3e}"],
                 ["bytes (analytic: streamed + gathered + B x B)",
                  f"{(t['stream_bytes'] + t['gather_bytes'] + t['bxb_bytes']) * nb:.3e}",
                  f"{x['step']['bytes accessed'] * nb:.3e}",
                  f"{x['epoch_as_reported']['bytes accessed']:.3e}"]])
        e = s.get("measured_epoch")
        f = s["floor_epoch_s"]
        text += (f"\nEpoch floor: {common.fmt_seconds(f['compulsory'])} (compulsory traffic), "
                 f"{common.fmt_seconds(f['materialised'])} (B x B materialised). ")
        if e:
            text += (f"Measured JAX epoch: {common.fmt_seconds(e['epoch_s'])}"
                     f"{' (extrapolated from a subset of batches)' if e['extrapolated'] else ''}"
                     f" = {e['epoch_s'] / f['compulsory']:.1f}x the compulsory floor, "
                     f"{e['epoch_s'] / f['materialised']:.1f}x the materialised floor "
                     f"(from {e['source']}).\n")
        else:
            text += "No matching measured JAX epoch in the epoch_time JSON.\n"
    return text


def run_setting(model: str, dim: int, dataset, args, rates: dict) -> dict:
    import dataclasses

    from recgoat_jax import config as config_lib
    from recgoat_jax.models import build_model
    from recgoat_jax.train.loop import Trainer, count_params
    from benchmarks.epoch_time import CONFIGS, MODELS

    cfg = config_lib.load(CONFIGS / MODELS[model][0], [f"model.dim={dim}"] + list(args.set or []))
    empty = np.zeros((0, 2), np.int32)
    train_only = dataclasses.replace(dataset, valid=empty, test=empty)  # no evaluators
    trainer = Trainer(cfg, train_only, model=build_model(cfg, train_only))  # no run checks
    s = sizes_of(cfg, dataset, trainer.model.inputs)
    n_params = count_params(trainer.init_state().params)
    per_batch = count_batch(model, cfg, s, n_params)
    totals = {k: sum(c[k] for c in per_batch.values()) for k in KINDS}
    setting = {"model": model, "dim": dim, "sizes": s, "n_params": n_params,
               "per_batch": per_batch, "totals_per_batch": totals,
               "measured_epoch": epoch_measurement(args.epoch_json, model, dim, dataset)}
    setting.update(floors_of(setting, rates))
    print(f"== {model} d={dim}: floor/epoch {setting['floor_epoch_s']}", flush=True)
    if not args.no_xla:
        setting["xla"] = xla_costs(trainer)
        print(f"   XLA step {setting['xla']['step']}, measured step "
              f"{setting['xla']['step_measured_s']:.3f} s", flush=True)
    if args.components:
        setting["component_seconds"] = component_times(model, cfg, trainer, s)
        print(f"   components {setting['component_seconds']}", flush=True)
    return setting


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="recgoat,lightgcn")
    parser.add_argument("--dims", default="64,256,800")
    common.add_data_args(parser)
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override")
    parser.add_argument("--epoch-json", default=",".join(
                            str(p) for p in sorted(common.RESULTS.glob("epoch_time*.json"))),
                        help="epoch_time output(s) holding the measured JAX epochs (comma list)")
    parser.add_argument("--components", action="store_true",
                        help="also time each component's forward + backward in JAX")
    parser.add_argument("--no-xla", action="store_true", help="skip XLA's cost analysis")
    parser.add_argument("--quick-rates", action="store_true",
                        help="measure the rates on small problems (checks the script only)")
    parser.add_argument("--wait-quiet-min", type=float, default=0.0)
    parser.add_argument("--out", default=str(common.RESULTS))
    parser.add_argument("--tag", default="")
    parser.add_argument("--from-json", default="",
                        help="measure nothing: recompute the floors of a saved roofline JSON "
                             "(its counts and rates) and rewrite it and its Markdown")
    args = parser.parse_args(argv)
    if args.from_json:
        import json
        from pathlib import Path

        path = Path(args.from_json)
        result = json.loads(path.read_text())
        for setting in result["settings"]:
            setting.update(floors_of(setting, result["meta"]["rates"]))
        note = (f"floors recomputed from this file's counts and rates by `python3 -m "
                f"benchmarks.roofline --from-json {args.from_json}` "
                f"({time.strftime('%Y-%m-%d %H:%M %Z')}); measurements unchanged.")
        notes = [n for n in result["meta"].get("notes", []) if "--from-json" not in n]
        result["meta"]["notes"] = notes + [note]
        path.write_text(json.dumps(result, indent=1) + "\n")
        path.with_suffix(".md").write_text(markdown(result))
        print(f"rewrote {path} and {path.with_suffix('.md')}")
        return result

    load = common.start_run(args.wait_quiet_min)
    dataset = common.load_dataset(args.preset, args.data_format, args.data_path, args.data_name)
    rates = measure_rates(quick=args.quick_rates)
    print("rates:", {k: v for k, v in rates.items() if k != "bandwidth_detail_bytes_per_s"},
          flush=True)
    result = {"meta": {"command": common.command_line(), "machine": common.machine_info(),
                       "threads": {**common.thread_info(), "busy_threads": common.busy_threads()},
                       "rates": rates, "load": load,
                       "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
              "settings": []}
    for model in [m for m in args.models.split(",") if m]:
        for dim in [int(d) for d in args.dims.split(",")]:
            result["settings"].append(run_setting(model, dim, dataset, args, rates))
    return common.finish_run(args.out, f"roofline{args.tag}", result, markdown, load)


if __name__ == "__main__":
    main()
