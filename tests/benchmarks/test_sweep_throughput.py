"""benchmarks/sweep_throughput.py runs end to end (tiny preset, LightGCN, S = 1, 2) and its
group (both layouts) reproduces the solo runs' losses."""

import pytest

from benchmarks import sweep_throughput


def test_smoke_run_measures_both_ways_and_agrees(tmp_path):
    result = sweep_throughput.main(["--smoke", "--models", "lightgcn", "--out", str(tmp_path)],
                                   log=lambda *_: None)
    cells = result["models"][0]["cells"]
    assert [c["members"] for c in cells] == [1, 2]
    for c in cells:
        assert c["sequential_member_epochs_per_s"] > 0
        assert set(c["layouts"]) == {"one_by_one", "vmapped"}
        for layout in c["layouts"].values():
            assert layout["member_epochs_per_s"] > 0
            assert layout["max_rel_loss_diff"] < 1e-5  # LightGCN members equal their solo runs
    md = (tmp_path / "sweep_throughput.md").read_text()
    assert "| S |" in md and "## lightgcn" in md


@pytest.mark.slow
def test_smoke_run_shards_the_group_over_devices(tmp_path):
    # the test session has 8 forced CPU devices (conftest)
    result = sweep_throughput.main(["--smoke", "--models", "lightgcn", "--devices", "4",
                                    "--layouts", "one_by_one", "--out", str(tmp_path)],
                                   log=lambda *_: None)
    assert result["meta"]["devices"] == 4
    cells = result["models"][0]["cells"]
    assert [c["members"] for c in cells] == [4, 8]
    for c in cells:
        assert c["layouts"]["one_by_one"]["max_rel_loss_diff"] < 1e-5
    assert "Group on 4 device(s)" in (tmp_path / "sweep_throughput.md").read_text()
