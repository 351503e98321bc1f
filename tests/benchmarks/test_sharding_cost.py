"""benchmarks/scaling.py --compile-only (benchmarks/sharding_cost.py): the per-device state
and graph fall as 1/N under train.sharding='graph' and stay flat under 'data', and the
collectives of the compiled HLO are counted with their bytes."""

import json

import pytest

from benchmarks import scaling, sharding_cost


def test_collective_bytes_reads_result_shapes():
    hlo = ("%ag = f32[16,8]{1,0} all-gather(%x), dimensions={0}\n"
           "%ar = (f32[], f32[4]{0}) all-reduce(%a, %b), to_apply=%sum\n"
           "%ags = bf16[2,3]{1,0} all-gather-start(%y)\n"
           "%add = f32[16,8]{1,0} add(%p, %q)\n")
    assert sharding_cost.collective_bytes(hlo) == {"all-gather": 16 * 8 * 4 + 2 * 3 * 2,
                                                   "all-reduce": 4 + 16}


@pytest.mark.parametrize("model", ["lightgcn", pytest.param("recgoat", marks=pytest.mark.slow)])
def test_graph_sharding_splits_state_graph_and_graph_work_per_device(tmp_path, model):
    scaling.main(["--compile-only", "--models", model, "--preset", "tiny", "--dim", "8",
                  "--batch-size", "128", "--devices", "1,4", "--out", str(tmp_path),
                  "--set", "model.gat_heads=4", "--set", "model.knn_k=5"])
    rows = json.loads((tmp_path / "scaling_compiled.json").read_text())["rows"]
    by = {(r["sharding"], r["devices"]): r for r in rows}
    assert set(by) == {("data", 1), ("data", 4), ("graph", 1), ("graph", 4)}
    assert by["data", 4]["state_bytes"] == by["data", 1]["state_bytes"]  # replicated
    assert by["data", 4]["graph_bytes"] == by["data", 1]["graph_bytes"]
    assert by["data", 4]["vs_1"]["graph_flops"] > 0.9  # every device runs the whole graph
    # 60 users and 45 items over 4 devices: blocks of 15 and 12 rows (the padding is exact);
    # RecGOAT's GAT, fusion and projection weights (a few d x d and f x d) stay replicated
    assert by["graph", 4]["vs_1"]["state_bytes"] < (0.27 if model == "lightgcn" else 0.7)
    assert by["graph", 4]["vs_1"]["graph_bytes"] < 0.3
    assert by["graph", 4]["vs_1"]["graph_flops"] < 0.4
    assert by["graph", 4]["collectives"].get("all-gather", 0) > 0
    assert "graph part" in (tmp_path / "scaling_compiled.md").read_text()


def test_csr_flops_counts_each_propagation_product_forward_and_backward(tiny):
    from recgoat_jax import config as C
    from recgoat_jax.train.loop import Trainer

    cfg = C.load("lightgcn", ['data.preset="tiny"', "model.dim=8", "model.n_layers=2",
                              "train.n_devices=1"])
    edges = 2 * len(tiny.train)  # each interaction in both directions
    assert sharding_cost.csr_flops(Trainer(cfg, tiny), cfg) == 2 * 2 * (2 * edges * 8)


def test_csr_flops_leaves_the_partitioned_gat_to_xla(tiny):
    """Under "graph" the GAT is a gather and a segment sum (XLA counts it): only the
    user-item block's CSR products are added, not the kNN graphs' partitioned edges."""
    import numpy as np

    from recgoat_jax import config as C
    from recgoat_jax.train.loop import Trainer

    cfg = C.load("recgoat-reference", ['data.preset="tiny"', "model.dim=8", "model.n_layers=2",
                                       "train.n_devices=4", "train.sharding=graph"])
    trainer = Trainer(cfg, tiny)
    block = int(np.max(np.asarray(trainer.inputs["graph"].indptr)[:, -1]))
    assert sharding_cost.csr_flops(trainer, cfg) == 2 * 2 * (2 * block * 8)
