"""Test-wide set-up: 8 forced CPU devices (multi-device tests), and the golden file's location."""

import os
from pathlib import Path

# Must happen before jax is imported anywhere: multi-device tests run on 8 forced CPU devices.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# Many tests compile the same small programs: a persistent compilation cache shared by the
# test session (and its subprocesses) halves the suite's time on a 2-core CI machine.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      str(Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def golden_path() -> Path:
    """../shared/golden/reference_tiny.npz beside the checkout, or $RECGOAT_GOLDEN."""
    env = os.environ.get("RECGOAT_GOLDEN")
    return Path(env) if env else REPO.parent / "shared" / "golden" / "reference_tiny.npz"


@pytest.fixture(scope="session")
def golden():
    path = golden_path()
    if not path.exists():
        pytest.skip(f"golden file {path} is absent (set RECGOAT_GOLDEN to its path)")
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


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
