"""experiments/synthetic_ceiling.py: the planted-model ceiling and the modalities' probes."""

import pytest


@pytest.fixture(scope="module")
def ceiling(load_script):
    return load_script("experiments/synthetic_ceiling.py", "synthetic_ceiling")


def test_ceiling_runs_on_the_tiny_preset(ceiling, capsys):
    ceiling.main(["--preset", "tiny"])
    out = capsys.readouterr().out
    recall = float(out.split("recall@20 ")[1].split()[0].rstrip(","))
    assert 0.0 < recall <= 1.0
    assert "item text" in out and "user text" in out
