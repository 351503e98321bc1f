"""experiments/user_gate_probe.py: the user branch's share is reported every epoch."""

import pytest


@pytest.fixture(scope="module")
def probe(load_script):
    return load_script("experiments/user_gate_probe.py", "user_gate_probe")


TINY = ["data.preset=tiny", "model.dim=16", "model.gat_heads=2", "model.knn_k=5",
        "model.user_knn_k=5", "train.batch_size=128", "loss.infonce_block=0"]


def test_probe_reports_a_share_per_epoch(probe, capsys):
    shares = probe.main(["--epochs", "2", *(a for s in TINY for a in ("--set", s))])
    assert len(shares) == 2 and all(0.0 < s < 1.0 for s in shares)
    assert shares[0] != pytest.approx(0.1, abs=1e-7)  # the gate moved from its start
    assert capsys.readouterr().out.count("user share") == 2


def test_probe_refuses_data_without_user_features(probe):
    with pytest.raises(SystemExit, match="no user features"):
        probe.main(["--epochs", "1", "--set", "data.preset=baby"])
