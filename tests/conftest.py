"""Test-wide set-up and what several test folders share.

Set-up: 8 forced CPU devices (multi-device tests), lighter LLVM code generation (`xla_flags`)
and a persistent compilation cache.
Shared: the repository paths (`REPO`, `CONFIGS`), the golden file of the public PyTorch code
(`golden`; absent it skips locally and FAILS in CI, which always has ../shared), the synthetic
`tiny` preset, `close` (relative comparison), `np_entropic_ot` / `np_sinkhorn_divergence`
(float64 numpy Sinkhorn), `run_cli` / `run_features_cli` (the command line in-process), and
data folders written from a `Dataset` (`tiny_mmrec`).
"""

import os
from pathlib import Path


def xla_flags(devices: int) -> str:
    """XLA_FLAGS for a test process: `devices` forced CPU devices, and LLVM code generation at
    level 1 ("Less"; XLA's CPU compiler maps xla_backend_optimization_level to LLVM's level).
    The tests' programs are small and compile-bound: level 1 cut the RecGOAT golden and
    user-side test files from 118 s (XLA's default level) to 83 s (cold cache, another
    training on the second core), and the fresh-clone CI suite from 692 to 563 s on a quiet
    machine. The optimised HLO, fusions
    included, was the same at every level on a Sinkhorn gradient; only the machine code
    differs, so rounding may move, and every comparison here has a tolerance. Level 0 (78 s)
    is not used: it moved the graph-sharded default transport 17x further from one device
    than a one-ulp change of its cost does, failing test_graph_sharding's ulp comparison,
    which passes at level 1 and at the default."""
    return f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=1"


# Must happen before jax is imported anywhere: multi-device tests run on 8 forced CPU devices.
os.environ.setdefault("XLA_FLAGS", xla_flags(8))
# Many tests compile the same small programs: a persistent compilation cache shared by the
# test session (and its subprocesses) halves the suite's time on a 2-core CI machine.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      str(Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "recgoat_jax" / "configs"  # the packaged presets (experiments/configs links here)


def golden_path() -> Path:
    """../shared/golden/reference_tiny.npz beside the checkout, or $RECGOAT_GOLDEN."""
    env = os.environ.get("RECGOAT_GOLDEN")
    return Path(env) if env else REPO.parent / "shared" / "golden" / "reference_tiny.npz"


@pytest.fixture(scope="session")
def golden():
    """The golden file's arrays. Missing: a failure in CI (CI=true always has ../shared, so a
    skip there would hide every reproduction test), a skip elsewhere."""
    path = golden_path()
    if not path.exists():
        message = f"golden file {path} is absent (set RECGOAT_GOLDEN to its path)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="session")
def tiny():
    """The synthetic `tiny` preset (60 users, 45 items; a frozen Dataset, safe to share)."""
    from recgoat_jax.data.synthetic import generate
    return generate("tiny")


def close(got, want, rtol: float = 1e-4, name: str = "") -> None:
    """`got` equals `want` to `rtol` relative to the largest |want| (shapes equal)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(np.abs(want).max(), 1e-12),
                               err_msg=name)


def np_entropic_ot(x, y, epsilon: float, tolerance: float = 1e-8,
                   max_iterations: int = 200_000) -> float:
    """Entropic OT between uniform point clouds x [n, d], y [m, d] with squared-Euclidean cost,
    in float64 numpy: <P, C> + eps KL(P | a b^T) at the Sinkhorn fixed point (log domain,
    P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps)), iterated until every row and column sum is
    within `tolerance` (relative) of its marginal. Written from the formula, for tests of the
    ott-based losses."""
    from scipy.special import logsumexp

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    a, b = np.full(len(x), 1.0 / len(x)), np.full(len(y), 1.0 / len(y))
    cost = np.sum((x[:, None, :] - y[None, :, :]) ** 2, axis=-1)
    symmetric = x.shape == y.shape and np.array_equal(x, y)
    f, g = np.zeros(len(x)), np.zeros(len(y))

    def plan():
        return a[:, None] * b[None, :] * np.exp((f[:, None] + g[None, :] - cost) / epsilon)

    def error():
        p = plan()
        return max(np.abs(p.sum(1) - a).max() / a.max(), np.abs(p.sum(0) - b).max() / b.max())

    for i in range(max_iterations):
        if symmetric:  # the averaged update: alternating ones crawl on a near-identity plan
            f = 0.5 * (f - epsilon * logsumexp((f[None, :] - cost) / epsilon, b=b[None, :],
                                               axis=1))
            g = f
        else:
            f = -epsilon * logsumexp((g[None, :] - cost) / epsilon, b=b[None, :], axis=1)
            g = -epsilon * logsumexp((f[:, None] - cost) / epsilon, b=a[:, None], axis=0)
        if i % 100 == 99 and error() < tolerance:
            break
    assert error() < tolerance, "np_entropic_ot did not converge"
    p = plan()
    return float(np.sum(p * cost) + epsilon * np.sum(p * np.log(p / (a[:, None] * b[None, :]))))


def np_sinkhorn_divergence(x, y, epsilon: float) -> float:
    """OT(x, y) - (OT(x, x) + OT(y, y)) / 2 with `np_entropic_ot`."""
    return np_entropic_ot(x, y, epsilon) - 0.5 * (np_entropic_ot(x, x, epsilon)
                                                  + np_entropic_ot(y, y, epsilon))


def run_features_cli(argv: list[str], ds) -> int:
    """The `encode` / `profiles` commands on dataset `ds` (no data options), in-process."""
    import argparse

    from recgoat_jax.cli.features import add_cli

    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command", required=True),
            add_data_args=lambda p: None, load_data=lambda args: ds)
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="session")
def load_script():
    """``load_script(relative_path, name)``: a repository script (experiments/..., not a
    package module) imported as a module, for tests of its functions."""
    import importlib.util

    def load(relative: str, name: str):
        spec = importlib.util.spec_from_file_location(name, REPO / relative)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch limited to one intra-op thread for a test module: its problems are tiny, and
    several threads on a busy 2-core box only spin."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def run_cli(capsys):
    """``run_cli(*argv) -> (exit code, stdout, stderr)`` of `recgoat-jax` run in-process."""
    from recgoat_jax.cli import main

    def run(*argv):
        capsys.readouterr()
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def write_mmrec_dataset(folder: Path, ds, *, features: bool = True, valid: bool = True) -> Path:
    """`ds` (a `Dataset`) as MMRec files in `folder`: <name>.inter (+ *_feat.npy)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["userID\titemID\trating\ttimestamp\tx_label"]
    for label, pairs in enumerate((ds.train, ds.valid if valid else ds.valid[:0], ds.test)):
        lines += [f"{u}\t{i}\t5.0\t{t}\t{label}" for t, (u, i) in enumerate(pairs.tolist())]
    (folder / f"{folder.name}.inter").write_text("\n".join(lines) + "\n")
    if features:
        for m, x in ds.item_features.items():
            np.save(folder / f"{m}_feat.npy", x)
    return folder


@pytest.fixture
def tiny_mmrec(tmp_path):
    """``tiny_mmrec(name="tiny", **kw)``: the synthetic `tiny` preset as an MMRec folder
    under tmp_path (keyword arguments of `write_mmrec_dataset`)."""
    from recgoat_jax.data.synthetic import generate

    def make(name: str = "tiny", **kw) -> Path:
        return write_mmrec_dataset(tmp_path / name, generate("tiny"), **kw)

    return make


def run_two_processes(script: str, args: list[str], tmp_path: Path, devices: int,
                      timeout_s: float = 240) -> None:
    """Run `script port process_id *args` as processes 0 and 1 of a localhost jax.distributed
    job (`devices` forced CPU devices each) and wait for both; pytest.fail with their logs
    when one fails (the other is stopped: it would wait for it) or they take too long."""
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("localhost", 0))  # the OS picks a free port
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO),
           "XLA_FLAGS": xla_flags(devices)}
    env.pop("RECGOAT_DISTRIBUTED", None)
    logs = [open(tmp_path / f"worker{i}.log", "wb") for i in range(2)]
    workers = [subprocess.Popen([sys.executable, script, str(port), str(i), *args], env=env,
                                stdout=logs[i], stderr=subprocess.STDOUT) for i in range(2)]
    try:
        deadline = time.monotonic() + timeout_s
        while any(w.poll() is None for w in workers) and not any(w.returncode for w in workers):
            if time.monotonic() > deadline:
                pytest.fail(f"the 2-process job took more than {timeout_s} s")
            time.sleep(0.2)
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait(timeout=30)
        for f in logs:
            f.close()
    if any(w.returncode for w in workers):
        pytest.fail("\n".join(f"worker {i} exited {w.returncode}:\n"
                              + (tmp_path / f"worker{i}.log").read_text()[-3000:]
                              for i, w in enumerate(workers)))
