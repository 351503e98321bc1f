"""benchmarks/scaling.py --compile-only (benchmarks/sharding_cost.py): the per-device state
and graph fall as 1/N under train.sharding='graph' and stay flat under 'data', and the
collectives of the compiled HLO are counted with their bytes."""

import json

from benchmarks import scaling, sharding_cost


def test_collective_bytes_reads_result_shapes():
    hlo = ("%ag = f32[16,8]{1,0} all-gather(%x), dimensions={0}\n"
           "%ar = (f32[], f32[4]{0}) all-reduce(%a, %b), to_apply=%sum\n"
           "%ags = bf16[2,3]{1,0} all-gather-start(%y)\n"
           "%add = f32[16,8]{1,0} add(%p, %q)\n")
    assert sharding_cost.collective_bytes(hlo) == {"all-gather": 16 * 8 * 4 + 2 * 3 * 2,
                                                   "all-reduce": 4 + 16}


def test_graph_sharding_splits_state_and_graph_per_device(tmp_path):
    scaling.main(["--compile-only", "--models", "lightgcn", "--preset", "tiny", "--dim", "8",
                  "--batch-size", "128", "--devices", "1,4", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "scaling_compiled.json").read_text())["rows"]
    by = {(r["sharding"], r["devices"]): r for r in rows}
    assert set(by) == {("data", 1), ("data", 4), ("graph", 1), ("graph", 4)}
    assert by["data", 4]["state_bytes"] == by["data", 1]["state_bytes"]  # replicated
    assert by["data", 4]["graph_bytes"] == by["data", 1]["graph_bytes"]
    # 60 users and 45 items over 4 devices: blocks of 15 and 12 rows (the padding is exact)
    assert by["graph", 4]["vs_1"]["state_bytes"] < 0.27
    assert by["graph", 4]["vs_1"]["graph_bytes"] < 0.3
    assert by["graph", 4]["collectives"].get("all-gather", 0) > 0
    assert "graph" in (tmp_path / "scaling_compiled.md").read_text()
