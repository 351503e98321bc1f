import json
from pathlib import Path

import pytest

from recgoat_jax import config as C
from recgoat_jax.data.synthetic import generate
from recgoat_jax.train.guard import (PLAN_MARGINAL_TOLERANCE, TrainingDiverged, check_epoch,
                                     plan_warning)
from recgoat_jax.train.loop import Trainer, train


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


def test_plan_warning_names_each_modality_off_its_marginals():
    healthy = {"loss": 0.5, "plan_text_marginal_rel_error": 0.01,
               "plan_image_marginal_rel_error": 0.09, "plan_text_sum": 64.0}
    assert plan_warning(4, healthy) is None
    assert plan_warning(4, {"loss": 0.5, "bpr": 0.4}) is None  # a model without plans
    msg = plan_warning(6, dict(healthy, plan_image_marginal_rel_error=23.5))
    assert "epoch 6" in msg and "image 23.5" in msg and "text" not in msg
    assert "model.oat.cost_norm='mean'" in msg and "\n" not in msg
    assert plan_warning(6, healthy, tolerance=0.05).count("image 0.09") == 1
    # the kernel-domain solver has no cost_norm: its remedy is the log-domain solver
    msg = plan_warning(2, dict(healthy, plan_text_marginal_rel_error=1.0), solver="reference")
    assert "text 1" in msg and "model.oat.solver='ott'" in msg and "cost_norm" not in msg
    # the low-rank solver ignores epsilon: the remedy does not offer it
    msg = plan_warning(2, dict(healthy, plan_text_marginal_rel_error=1.0), solver="lowrank")
    assert "model.oat.cost_norm='mean'" in msg and "epsilon" not in msg


def _plan_errors(run: Path) -> list[float]:
    """Each epoch's largest relative marginal error over the run's plans."""
    return [max(v for k, v in json.loads(line).items() if k.endswith("_marginal_rel_error"))
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_runs_and_sweep_members_warn_once_when_their_plan_left_its_marginals(tiny, tmp_path):
    from recgoat_jax.sweep import GroupTrainer

    base = ['data.preset="tiny"', "train.batch_size=128", "train.epochs=3", "eval.every=1",
            "train.n_devices=1"]
    one_step = ["model.oat.iterations=1", "model.oat.min_iterations=1"]  # far from converged
    relative = ["model.oat.cost_norm=mean"]  # the remedy the warning names
    for name, extra in (("one_step", one_step), ("relative", relative)):
        train(C.load("recgoat", base + extra), tiny, tmp_path / name, progress=False)
    warned = {name: (tmp_path / name / "train.log").read_text().count("off its marginals")
              for name in ("one_step", "relative")}
    assert min(_plan_errors(tmp_path / "one_step")) > PLAN_MARGINAL_TOLERANCE  # every epoch
    assert warned["one_step"] == 1  # once, although every epoch's plan was off
    assert max(_plan_errors(tmp_path / "relative")) <= PLAN_MARGINAL_TOLERANCE
    assert warned["relative"] == 0
    # the sweep engine (the protocol's trainer) warns in each member's own log
    cfgs = [C.load("recgoat", base + one_step + [f"train.lr={lr}"]) for lr in (1e-3, 2e-3)]
    GroupTrainer(cfgs, tiny).run([tmp_path / "m0", tmp_path / "m1"])
    for member in ("m0", "m1"):
        assert (tmp_path / member / "train.log").read_text().count("off its marginals") == 1
