import pytest

from recgoat_jax import config as C
from recgoat_jax.data.synthetic import generate
from recgoat_jax.train.guard import TrainingDiverged, check_epoch
from recgoat_jax.train.loop import Trainer


def test_check_epoch_names_epoch_term_and_setting():
    check_epoch(3, {"loss": 0.5, "bpr": 0.4, "finite": True})  # healthy: no error
    with pytest.raises(TrainingDiverged) as e:
        check_epoch(7, {"loss": float("nan"), "bpr": 0.4, "cl": float("inf"), "finite": False},
                    last_checkpoint="/runs/x/checkpoints/5")
    msg = str(e.value)
    assert "epoch 7" in msg and "'cl'" in msg and "loss.temperature" in msg
    assert "/runs/x/checkpoints/5" in msg
    with pytest.raises(TrainingDiverged, match="model.oat.solver"):
        check_epoch(2, {"loss": float("nan"), "plan_text_sum": float("nan"), "finite": False})


def test_a_diverging_run_stops_with_a_message():
    cfg = C.load(None, ["data.preset=tiny", "model.name=mf", "model.dim=8", "train.lr=1e30",
                        "train.epochs=5", "train.batch_size=64", "eval.ks=[5]",
                        "eval.metric=recall@5"])
    with pytest.raises(TrainingDiverged, match=r"epoch \d+: the loss term"):
        Trainer(cfg, generate("tiny")).run(None, progress=False)
