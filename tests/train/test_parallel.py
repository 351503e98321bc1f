"""Data parallelism on 8 forced CPU devices (conftest.py): the same numbers as one device."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recgoat_jax import config as C
from recgoat_jax.eval.ranking import RankingEvaluator
from recgoat_jax.train import parallel
from recgoat_jax.train.loop import Trainer

TINY = ["data.preset=tiny", "train.batch_size=128", "model.dim=16", "eval.ks=[5, 10, 20]",
        "eval.user_batch=32", "train.lr=0.01"]
# RecGOAT kept small so that it compiles fast (XLA's CPU compile dominates these tests): the
# text branch only, 2 GAT heads, 3 Sinkhorn iterations, 1 propagation layer.
RECGOAT = ["model.name=recgoat", 'model.modalities=["text"]', "model.gat_heads=2",
           "model.oat.iterations=3", "model.n_layers=1"]


def _train(cfg, dataset, n_devices: int, epochs: int):
    trainer = Trainer(C.replace(cfg, **{"train.n_devices": n_devices}), dataset)
    state = trainer.init_state()
    losses = []
    for _ in range(epochs):
        state, stats, _ = trainer.train_epoch(state)
        losses.append(stats["loss"])
    return trainer, state, losses


def _assert_same_run(run_1, run_8):
    (_, state_1, losses_1), (_, state_8, losses_8) = run_1, run_8
    np.testing.assert_allclose(losses_8, losses_1, rtol=0, atol=1e-5)
    for a, b in zip(jax.tree.leaves(state_1.params), jax.tree.leaves(state_8.params)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=1e-5)
    assert np.array_equal(np.asarray(state_1.key), np.asarray(state_8.key))
    # the state stays replicated over all 8 devices
    assert all(len(x.sharding.device_set) == 8 and x.sharding.is_fully_replicated
               for x in jax.tree.leaves(state_8))


def test_mesh_size_and_batch_divisibility_errors(tiny):
    assert jax.device_count() == 8, "conftest.py should force 8 CPU devices"
    assert parallel.data_size(parallel.make_mesh(0)) == 8
    assert parallel.data_size(parallel.make_mesh(2)) == 2
    with pytest.raises(ValueError, match=r"train.n_devices=9: expected 0 \(all\) or 1..8"):
        parallel.make_mesh(9)
    cfg = C.load(None, TINY + ["model.name=mf", "train.batch_size=100"])
    with pytest.raises(ValueError, match=r"train.batch_size=100 must be divisible by .* \(8\)"):
        Trainer(cfg, tiny)
    Trainer(C.replace(cfg, **{"train.n_devices": 4}), tiny)  # 100 = 4 x 25 is fine


def test_lightgcn_on_8_devices_equals_1_device(tiny):
    cfg = C.load(None, TINY + ["model.name=lightgcn"])
    run_1 = _train(cfg, tiny, 1, 3)
    run_8 = _train(cfg, tiny, 8, 3)
    _assert_same_run(run_1, run_8)
    trainer_8, state_8, _ = run_8
    # the batch really is split: the compiled epoch all-reduces (the gradients)
    hlo = trainer_8.lower_epoch(state_8).compile().as_text()
    assert "all-reduce" in hlo
    metrics_1 = run_1[0].evaluate(run_1[1].params)
    metrics_8 = trainer_8.evaluate(state_8.params)
    for split in ("valid", "test"):
        for k, v in metrics_1[split].items():
            assert metrics_8[split][k] == pytest.approx(v, abs=1e-6), (split, k)


# About 40 s on CI, compilation mostly: slow. Run by default instead, for RecGOAT on 8 devices:
# tests/train/test_graph_sharding.py (recgoat-eps1 at 8) and tests/test_losses.py (the
# distinct-row InfoNCE split over the data axis).
@pytest.mark.slow
def test_recgoat_on_8_devices_equals_1_device(tiny):
    cfg = C.load(None, TINY + RECGOAT)
    _assert_same_run(_train(cfg, tiny, 1, 2), _train(cfg, tiny, 8, 2))


def test_evaluation_is_identical_on_any_device_count(tiny):
    rng = np.random.default_rng(0)
    z_user = rng.normal(size=(tiny.n_users, 8)).astype(np.float32)
    z_item = rng.normal(size=(tiny.n_items, 8)).astype(np.float32)
    results = {}
    for n in (1, 3, 8, 5):
        evaluator = RankingEvaluator(tiny.n_users, tiny.n_items, tiny.train, tiny.test,
                                     ks=(5, 10, 20), user_batch=24, mesh=parallel.make_mesh(n))
        assert evaluator.user_batch == (24 if n != 5 else 25)  # raised to a multiple of n
        results[n] = (evaluator(z_user, z_item), evaluator.per_user_metrics(z_user, z_item))
    means_1, per_user_1 = results[1]
    assert 0 < means_1["recall@20"] < 1
    for n in (3, 8, 5):
        means, per_user = results[n]
        for k, v in per_user_1.items():
            assert np.array_equal(per_user[k], v), (n, k)
        if n != 5:  # the same user batches: identical sums, not just close ones
            assert means == means_1, n
        else:  # other batch boundaries: the sums are grouped differently
            assert means == pytest.approx(means_1, abs=1e-6)


def test_bf16_runs_the_dense_matmuls_in_bf16_and_keeps_f32_state(tiny):
    from recgoat_jax.config import ConfigError
    from recgoat_jax.graph.gat import ModalityBranch
    from recgoat_jax.graph.knn import knn_edges, with_self_loops

    trainer = Trainer(C.load(None, TINY + RECGOAT + ["train.precision=bf16",
                                                     "train.n_devices=2"]), tiny)
    state = trainer.init_state()
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {np.dtype("float32")}
    lowered = trainer.lower_epoch(state).as_text()
    bf16_dots = [line for line in lowered.splitlines() if "dot_general" in line and "bf16" in line]
    # forward and backward of: the text projection, the GAT kernel, the fusion map
    assert len(bf16_dots) >= 3, lowered[:2000]
    f32_lowered = Trainer(C.load(None, TINY + RECGOAT + ["train.n_devices=2"]), tiny) \
        .lower_epoch(state).as_text()
    assert not [line for line in f32_lowered.splitlines() if "bf16" in line]
    # bf16 operands, f32 results: close to the f32 branch, not equal to it
    x = tiny.item_features["text"]
    senders, receivers = with_self_loops(*knn_edges(x, 5), x.shape[0])
    outputs = {}
    for dtype in (jnp.float32, jnp.bfloat16):
        branch = ModalityBranch(16, heads=2, dtype=dtype)
        params = branch.init(jax.random.PRNGKey(0), x, senders, receivers, True)
        outputs[dtype] = branch.apply(params, x, senders, receivers, True)
    assert outputs[jnp.bfloat16].dtype == jnp.float32
    np.testing.assert_allclose(outputs[jnp.bfloat16], outputs[jnp.float32], rtol=0.05, atol=0.02)
    assert not np.array_equal(outputs[jnp.bfloat16], outputs[jnp.float32])
    with pytest.raises(ConfigError, match=r"train\.precision"):
        Trainer(C.load(None, TINY + ["model.name=mf", "train.precision=fp16"]), tiny)
