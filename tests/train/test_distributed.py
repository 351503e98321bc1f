"""Multi-host training: 2 processes on localhost under jax.distributed (CPU, gloo collectives).

Run as a script (`python tests/test_distributed.py <port> <process_id> <out_dir>`), this file
is one of the two worker processes: it trains through `train()` with the `[distributed]`
config section filled in, and process 0 writes metrics.jsonl.
"""

import json
import sys

import pytest

from recgoat_jax import config as C
from recgoat_jax.config import ConfigError, DistributedConfig
from recgoat_jax.train import distributed
from tests.conftest import run_two_processes

COMMON = ["data.preset=tiny", "train.batch_size=128", "model.dim=16", "eval.ks=[5, 10, 20]",
          "eval.user_batch=32", "train.epochs=3", "train.checkpoint_every=1"]
# model -> (config, settings): LightGCN, and RecGOAT with its features and kNN graphs
RUNS = {"lightgcn": (None, COMMON + ["model.name=lightgcn", "model.n_layers=1",
                                     "train.lr=0.01"]),
        "recgoat-reference": ("recgoat-reference", COMMON + ["model.gat_heads=4",
                                                              "eval.every=1"])}
WORKER_DEVICES = 2  # per process: 4 devices in all
TIMEOUT_S = 240


def test_initialize_arguments_from_config_then_environment():
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4",
           "JAX_PROCESS_ID": "2"}
    assert distributed.initialize_arguments(DistributedConfig(enabled=True), env) == {
        "coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 2}
    cfg = DistributedConfig(enabled=True, coordinator_address="host:99", num_processes=2,
                            process_id=0)
    assert distributed.initialize_arguments(cfg, env) == {
        "coordinator_address": "host:99", "num_processes": 2, "process_id": 0}
    # nothing anywhere: None, so that jax detects the cluster (TPU pod, SLURM, Open MPI)
    assert distributed.initialize_arguments(DistributedConfig(enabled=True), {}) == {
        "coordinator_address": None, "num_processes": None, "process_id": None}
    with pytest.raises(ConfigError, match="distributed.process_id must be in \\[0, 2\\)"):
        distributed.initialize_arguments(DistributedConfig(num_processes=2, process_id=2), {})
    with pytest.raises(ConfigError, match="JAX_NUM_PROCESSES='four'"):
        distributed.initialize_arguments(DistributedConfig(), {"JAX_NUM_PROCESSES": "four"})
    assert not distributed.wanted(DistributedConfig(), {})
    assert distributed.wanted(DistributedConfig(), {"RECGOAT_DISTRIBUTED": "1"})
    assert distributed.wanted(DistributedConfig(enabled=True), {})
    assert distributed.initialize(DistributedConfig(), {}) is False  # single-process: no-op


# graph sharding with RecGOAT: its partitioned LightGCN propagation, GAT branches and OAT
# statistics (LightGCN alone under "graph" is the 1-process tests' business)
# (the RecGOAT case takes about 2 min here: slow, run with -m slow)
@pytest.mark.parametrize("model, sharding", [
    ("lightgcn", "data"), pytest.param("recgoat-reference", "graph", marks=pytest.mark.slow)])
def test_two_processes_reproduce_the_one_process_run(tmp_path, model, sharding):
    from recgoat_jax.data.synthetic import generate
    from recgoat_jax.train.loop import Trainer

    config, run = RUNS[model]
    out = tmp_path / "two"
    run_two_processes(__file__, [str(out), sharding, model], tmp_path, WORKER_DEVICES,
                      TIMEOUT_S)
    two = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    two_result = json.loads((out / "result.json").read_text())
    assert two_result["epochs_run"] == 3
    # the checkpoint both processes wrote together resumes in one process (8 devices here,
    # train.sharding "data": a graph-sharded checkpoint holds the unpadded tables too)
    resumed = Trainer(C.load(config, run), generate("tiny")).run(out, progress=False,
                                                                 resume=True)
    assert resumed["epochs_run"] == 3 and resumed["test"] == two_result["test"]

    reference = tmp_path / "one"
    Trainer(C.load(config, run + ["train.n_devices=1"]), generate("tiny")).run(
        reference, progress=False)
    one = [json.loads(x) for x in (reference / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in two] == [1, 2, 3]
    for a, b in zip(one, two, strict=True):
        assert a.keys() == b.keys()
        for key in ("loss", "bpr", "reg", "valid/recall@20", "test/ndcg@20", "test/recall@10"):
            assert b[key] == pytest.approx(a[key], abs=1e-5), (a["epoch"], key)


def _worker(port: str, process_id: str, out: str, sharding: str, model: str) -> None:
    import jax

    from recgoat_jax.data.synthetic import generate
    from recgoat_jax.train.loop import train

    config, run = RUNS[model]
    cfg = C.load(config, run + ["distributed.enabled=true",
                                f'distributed.coordinator_address="localhost:{port}"',
                                "distributed.num_processes=2",
                                f"distributed.process_id={process_id}",
                                f"train.sharding={sharding}"])
    train(cfg, generate("tiny"), out, progress=False)
    assert jax.process_count() == 2 and jax.device_count() == 2 * WORKER_DEVICES


if __name__ == "__main__":
    _worker(*sys.argv[1:6])
