"""Per-device cost of one training step under train.sharding = "data" and "graph", from the
compiled program alone (nothing is run, so sizes that do not fit this machine still measure).

For each model, sharding and device count N: build the `Trainer`, lower and compile its epoch
(`jax.jit(...).lower(...).compile()`), and read, per device:

- ``cost_analysis()``: FLOPs and bytes accessed. The epoch is a `lax.scan` over its steps and
  XLA's analysis counts a loop body once, so these are one step's figures (plus the epoch's
  shuffle and negative draws);
- ``memory_analysis()``: argument bytes (the train state, the graph and the training pairs on
  this device), temporary and output bytes;
- the collectives of the compiled HLO: every all-gather, all-reduce, reduce-scatter,
  all-to-all and collective-permute with the bytes of its result (loop bodies counted once:
  per step);
- the parts of the state: bytes per device of the ID tables with their Adam moments, and of
  the graph, from the arrays' own shards.

    python -m benchmarks.scaling --compile-only [--models lightgcn,mf] [--devices 1,2,4,8]
        [--preset baby] [--dim 64] [--batch-size 2048]

writes <out>/scaling_compiled<tag>.{json,md}. The question it answers (issue #11): does the
per-device state and graph work fall as 1/N under "graph", and stay flat under "data"?
``python -m benchmarks.sharding_cost PAGE.json`` rewrites the page of an earlier run from its
JSON (e.g. after the projection's assumptions change).
"""

from __future__ import annotations

import re

from benchmarks import common

COLLECTIVE = re.compile(r"= (\(?[^=]*?\)?) (all-gather|all-reduce|reduce-scatter|all-to-all|"
                        r"collective-permute)(?:-start)?\(")
SHAPE = re.compile(r"(pred|s8|u8|s16|u16|f16|bf16|s32|u32|f32|s64|u64|f64)\[([\d,]*)\]")
BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
         "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8}


def collective_bytes(hlo: str) -> dict[str, int]:
    """{collective kind: bytes of its results} over the compiled HLO text (each op once)."""
    out: dict[str, int] = {}
    for shapes, kind in COLLECTIVE.findall(hlo):
        size = 0
        for dtype, dims in SHAPE.findall(shapes):
            n = 1
            for d in filter(None, dims.split(",")):
                n *= int(d)
            size += n * BYTES[dtype]
        out[kind] = out.get(kind, 0) + size
    return out


def device_bytes(tree) -> int:
    """Bytes that the first device holds of the arrays of `tree`."""
    import jax

    return sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(tree))


def abstract_state(trainer):
    """The train state as ShapeDtypeStructs with their shardings: lowering needs no state in
    memory (under "data" at N devices it would be N copies)."""
    import jax

    shapes = jax.eval_shape(trainer._make_state, jax.random.PRNGKey(0), trainer.hyper)
    # graph sharding: one sharding per leaf; data: one replicated sharding for every leaf
    shardings = trainer.state_sharding if trainer.layout else jax.tree.map(
        lambda _: trainer.state_sharding.params, shapes)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        shapes, shardings)


def shard_bytes(tree) -> int:
    """Bytes of the first device's shard of every ShapeDtypeStruct of `tree`."""
    import jax
    import numpy as np

    total = 0
    for x in jax.tree.leaves(tree):
        shape = x.sharding.shard_shape(x.shape)
        total += int(np.prod(shape, dtype=np.int64)) * x.dtype.itemsize
    return total


def csr_flops(trainer, cfg) -> float:
    """FLOPs per device of the CSR products of one step, which XLA's CPU cost analysis does not
    count (jaxlib's CSR kernel is a custom call): a product over E edges with a [n, k] table is
    2 E k, run once forward and once backward (the graphs are symmetric). LightGCN: one
    product per layer over the user-item edges the device holds (its block under "graph", all
    of them under "data"); RecGOAT under "data": the GAT aggregation over each kNN graph too
    (under "graph" it is a gather and a segment sum, which XLA counts)."""
    import numpy as np

    from recgoat_jax.graph.partition import PartitionedGraph
    from recgoat_jax.graph.partition_gat import PartitionedEdges

    inputs, d = trainer.inputs, cfg.model.dim
    flops = 0.0
    graph = inputs.get("graph") if isinstance(inputs, dict) else None
    if graph is not None and cfg.model.n_layers:
        if isinstance(graph, PartitionedGraph):  # the largest device block
            edges = int(np.max(np.asarray(graph.indptr)[:, -1]))
        else:  # a jraph.GraphsTuple of every edge
            edges = int(np.asarray(graph.senders).shape[0])
        flops += 2 * (2 * edges * d) * cfg.model.n_layers
    for key in ("knn", "user_knn"):
        for knn in (inputs.get(key) or {}).values() if isinstance(inputs, dict) else ():
            if not isinstance(knn, PartitionedEdges):  # (senders, receivers, reverse): CSR
                flops += 2 * (2 * int(np.asarray(knn[0]).shape[0]) * d) * cfg.model.gat_layers
    return flops


def graph_part_flops(trainer, state) -> float:
    """XLA's FLOPs per device of the whole-graph part of a step alone: the forward over every
    user and item (propagation, GAT branches, transport, fusion) and its backward, without the
    batch losses: ``grad(params -> sum(embed(params) * r))`` compiled with the step's
    shardings."""
    import jax
    import jax.numpy as jnp

    model = trainer.model

    def graph_part(params, inputs):
        z_user, z_item = model.embed(params, inputs)
        return jnp.sum(z_user * 1.5) + jnp.sum(z_item * 0.5)

    compiled = jax.jit(jax.grad(graph_part), in_shardings=(
        trainer.state_sharding.params, jax.tree.map(lambda x: x.sharding, trainer.inputs)),
        out_shardings=trainer.state_sharding.params).lower(state.params, trainer.inputs).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", 0.0))


def measure(cfg, dataset, step: bool = True) -> dict:
    """One compiled epoch's per-device figures (module docstring); without `step`, only the
    graph part's FLOPs and the state and graph bytes (the epoch is not compiled)."""
    from recgoat_jax.train.loop import Trainer

    trainer = Trainer(cfg, dataset)
    state = abstract_state(trainer)
    graph_flops = graph_part_flops(trainer, state) + csr_flops(trainer, cfg)
    if not step:
        return {"graph_flops": graph_flops,
                "state_bytes": shard_bytes((state.params, state.opt_state)),
                "graph_bytes": device_bytes(trainer.inputs)}
    compiled = trainer.lower_epoch(state).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    memory = compiled.memory_analysis()
    return {
        "flops": float(cost.get("flops", 0.0)),
        "graph_flops": graph_flops,
        "bytes_accessed": float(cost.get("bytes accessed", 0.0)),
        "argument_bytes": int(memory.argument_size_in_bytes),
        "temp_bytes": int(memory.temp_size_in_bytes),
        "output_bytes": int(memory.output_size_in_bytes),
        "state_bytes": shard_bytes((state.params, state.opt_state)),
        "graph_bytes": device_bytes(trainer.inputs),
        "collectives": collective_bytes(compiled.as_text()),
    }


def run(args, dataset) -> dict:
    import jax

    from recgoat_jax import config as config_lib
    from recgoat_jax.train.preflight import GRAPH_SHARDED_MODELS

    counts = [n for n in (int(x) for x in args.devices.split(",")) if n <= jax.device_count()]
    rows = []
    for model in args.models.split(","):
        # a model graph sharding cannot split (popularity) is measured under "data" only
        wanted = getattr(args, "shardings", "data,graph").split(",")
        for sharding in [s for s in ("data", "graph") if s in wanted
                         and (s == "data" or model in GRAPH_SHARDED_MODELS)]:
            for n in counts:
                cfg = config_lib.load(None, [f'data.preset="{args.preset}"', f"model.name={model}",
                                             f"model.dim={args.dim}",
                                             f"train.batch_size={args.batch_size}",
                                             f"train.n_devices={n}", f"train.sharding={sharding}"]
                                      + args.set)
                print(f"{model} {sharding}: {n} device(s) ...", flush=True)
                rows.append({"model": model, "sharding": sharding, "devices": n,
                             **measure(cfg, dataset, not getattr(args, "graph_part_only",
                                                                 False))})
    for row in rows:  # each figure over the same model and sharding's 1-device figure
        one = next((r for r in rows if r["model"] == row["model"] and
                    r["sharding"] == row["sharding"] and r["devices"] == 1), None)
        if one:
            row["vs_1"] = {k: row[k] / one[k] if one[k] else None
                           for k in ("flops", "graph_flops", "state_bytes", "graph_bytes",
                                     "argument_bytes") if k in row}
    return {"rows": rows, "device_count": jax.device_count(),
            "platform": jax.devices()[0].platform}


def markdown(payload: dict, args) -> str:
    text = common.run_header("Per-device step cost under data and graph sharding (compiled)",
                             payload["command"], payload.get("load"))
    text += (f"Data: preset `{args.preset}` ({payload['n_train']} training pairs), d = "
             f"{args.dim}, global batch {args.batch_size}; platform `{payload['platform']}`. "
             "Figures are per device, from the compiled epoch without running it: FLOPs and "
             "bytes accessed of one step (XLA counts the scan body once; jaxlib's CSR "
             "kernels, custom calls, are not in it), the graph part (the forward over every "
             "user and item and its backward, without the batch losses: XLA's count of that "
             "part compiled alone, plus the CSR products' 2 E d multiply-adds per product, "
             "forward and backward, counted from the edges each device holds), the state (ID "
             "tables and Adam moments) and graph bytes from the arrays' shards, XLA's "
             "argument / temporary bytes, and the bytes of the collectives' results per "
             "step. `/1` columns: the figure over the same sharding's 1-device figure "
             "(1/N is perfect partitioning).\n\n")
    rows = []
    for r in payload["rows"]:
        ratio = r.get("vs_1") or {}
        graph = f"{r['graph_flops'] / 1e9:.3f}" if "graph_flops" in r else "-"
        step = "flops" in r  # False: --graph-part-only
        rows.append([r["model"], r["sharding"], r["devices"],
                     f"{r['flops'] / 1e9:.3f}" if step else "-", _ratio(ratio.get("flops")),
                     graph, _ratio(ratio.get("graph_flops")),
                     common.fmt_bytes(r["state_bytes"]),
                     _ratio(ratio.get("state_bytes")), common.fmt_bytes(r["graph_bytes"]),
                     _ratio(ratio.get("graph_bytes")),
                     common.fmt_bytes(r["argument_bytes"]) if step else "-",
                     common.fmt_bytes(r["temp_bytes"]) if step else "-",
                     (", ".join(f"{k} {common.fmt_bytes(v)}" for k, v in
                                sorted(r["collectives"].items())) or "-") if step else "-"])
    text += common.md_table(["model", "sharding", "N", "GFLOP / step", "/1",
                             "graph part GFLOP", "/1", "state",
                             "/1", "graph", "/1", "arguments", "temporaries",
                             "collectives / step"], rows)
    if not all("flops" in r for r in payload["rows"]):
        return text + ("\n`-`: not measured (`--graph-part-only`: the epoch was not "
                       "compiled).\n")
    return text + projection(payload, payload["n_train"], args.batch_size)


# Public peak figures per chip (vendor spec sheets), for the projection only.
HARDWARE = {
    "8 x H100 SXM (NVLink)": {"chips": 8, "flops": 67e12, "hbm": 3.35e12, "link": 450e9,
                              "note": "FP32 non-tensor 67 TFLOP/s, HBM3 3.35 TB/s, NVLink 4 "
                                      "900 GB/s bidirectional = 450 GB/s each way"},
    "TPU v5p-64 (32 chips)": {"chips": 32, "flops": 459e12 / 6, "hbm": 2.765e12,
                              "link": 600e9,
                              "note": "459 TFLOP/s bf16, f32 matmuls assumed at 1/6 of it "
                                      "(multi-pass bf16), HBM2e 2.765 TB/s, ICI 4800 Gbit/s "
                                      "= 600 GB/s per chip"},
}


def projection(payload: dict, n_train: int, batch_size: int) -> str:
    """Step and epoch time on `HARDWARE` from the measured per-device figures at the largest N:
    step = max(FLOPs / peak, bytes accessed / HBM) + collective bytes / link bandwidth."""
    rows = payload["rows"]
    n_max = max(r["devices"] for r in rows)
    steps = -(-n_train // batch_size)
    out = []
    for name, hw in HARDWARE.items():
        for r in (r for r in rows if r["devices"] == n_max):
            # more chips than measured devices: the partitioned figures (graph sharding) shrink
            # by n_max / chips; under "data" every per-device figure stays (replicated graph)
            shrink = n_max / hw["chips"] if r["sharding"] == "graph" else 1.0
            comm = sum(r["collectives"].values())
            compute = r["flops"] * shrink / hw["flops"]
            memory = r["bytes_accessed"] * shrink / hw["hbm"]
            step = max(compute, memory) + comm / hw["link"]
            out.append([name, r["model"], r["sharding"], common.fmt_seconds(compute),
                        common.fmt_seconds(memory), common.fmt_seconds(comm / hw["link"]),
                        common.fmt_seconds(step), common.fmt_seconds(step * steps)])
    text = ("\n## Projection to accelerators (not measured)\n\n"
            f"From the per-device figures at N = {n_max} above: step = max(FLOPs / peak, bytes "
            "accessed / HBM bandwidth) + collective bytes / link bandwidth (no overlap of "
            "communication with compute: pessimistic; XLA's CPU cost analysis stands in for "
            "the accelerator's, and its bytes accessed assume no cache reuse), epoch = step x "
            f"{steps} steps. With more chips than {n_max}, the graph-sharded figures are "
            f"scaled by {n_max} / chips; the all-gathered bytes per device do not shrink (each "
            "device receives the whole table per layer). Peaks: " +
            "; ".join(f"{k}: {v['note']}" for k, v in HARDWARE.items()) + ". Steps of a "
            "fraction of a millisecond would in practice be bound by kernel-launch and "
            "collective latency, which this does not model.\n\n")
    return text + common.md_table(["hardware", "model", "sharding", "compute", "memory",
                                   "communication", "step", "epoch"], out)


def _ratio(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def rewrite(json_path: str) -> None:
    """Write the Markdown page beside `json_path` (a ``scaling_compiled*.json``) again."""
    import json
    import types
    from pathlib import Path

    path = Path(json_path)
    payload = json.loads(path.read_text())
    args = types.SimpleNamespace(**payload["args"])
    path.with_suffix(".md").write_text(markdown(payload, args))


if __name__ == "__main__":
    import sys

    for page in sys.argv[1:]:
        rewrite(page)
