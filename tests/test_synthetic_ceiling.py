"""experiments/synthetic_ceiling.py: the planted-model ceiling and the feature read-out."""

import importlib.util
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

_spec = importlib.util.spec_from_file_location(
    "synthetic_ceiling", REPO / "experiments" / "synthetic_ceiling.py")
ceiling = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ceiling)


def test_readout_r2_separates_signal_from_noise():
    rng = np.random.default_rng(0)
    factors = rng.standard_normal((2000, 4))
    mixed = factors @ rng.standard_normal((4, 32))
    assert ceiling.readout_r2(mixed, factors) > 0.999
    assert ceiling.readout_r2(rng.standard_normal((2000, 32)), factors) < 0.05


def test_ceiling_runs_on_the_tiny_preset(capsys):
    ceiling.main(["--preset", "tiny"])
    out = capsys.readouterr().out
    recall = float(out.split("recall@20 ")[1].split()[0].rstrip(","))
    assert 0.0 < recall <= 1.0
    assert "item text" in out and "user text" in out
