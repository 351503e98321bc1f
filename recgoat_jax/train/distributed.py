"""Multi-host start-up: `jax.distributed.initialize` from the `[distributed]` config section or
the environment (docs/multihost.md shows launches on a TPU pod and on a GPU cluster).

Every process runs the same program on the whole dataset: the epoch's batches are drawn on
device from one replicated key, so each process computes the same global index arrays and its
devices keep only their rows (`recgoat_jax.train.parallel`); nothing is sent between hosts but
the gradient all-reduce and the evaluation sums.

Values left empty in the config come from the environment: ``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``, or, when those are unset too, jax's own cluster
detection (Cloud TPU pods, SLURM, Open MPI, ...). ``RECGOAT_DISTRIBUTED=1`` turns it on without
editing the config.
"""

from __future__ import annotations

import os

import jax

from recgoat_jax.config import ConfigError, DistributedConfig

ENABLE_VARIABLE = "RECGOAT_DISTRIBUTED"


def wanted(cfg: DistributedConfig, environ=os.environ) -> bool:
    """Whether this run is multi-host: `distributed.enabled` or RECGOAT_DISTRIBUTED=1/true."""
    return cfg.enabled or environ.get(ENABLE_VARIABLE, "").lower() in ("1", "true", "yes")


def initialize_arguments(cfg: DistributedConfig, environ=os.environ) -> dict:
    """Keyword arguments for `jax.distributed.initialize`: config values, else environment
    values, else None (jax detects the cluster). ConfigError on malformed values."""
    def env_int(name: str, field: str):
        text = environ.get(name, "")
        if not text:
            return None
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"environment variable {name}={text!r} (for distributed.{field}) "
                              "must be an integer") from None

    num_processes = cfg.num_processes or env_int("JAX_NUM_PROCESSES", "num_processes")
    process_id = cfg.process_id if cfg.process_id >= 0 else env_int("JAX_PROCESS_ID",
                                                                   "process_id")
    if num_processes is not None and num_processes < 1:
        raise ConfigError(f"distributed.num_processes must be >= 1, got {num_processes}")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise ConfigError(f"distributed.process_id must be in [0, {num_processes}), "
                          f"got {process_id}")
    return {"coordinator_address": cfg.coordinator_address or
            environ.get("JAX_COORDINATOR_ADDRESS") or None,
            "num_processes": num_processes, "process_id": process_id}


def initialize(cfg: DistributedConfig, environ=os.environ) -> bool:
    """Start jax.distributed once if this run is multi-host; returns whether it is.

    Must run before any jax computation in the process (jax's own rule). Calling it again, or
    after jax.distributed was started by other code, does nothing.
    """
    if not wanted(cfg, environ):
        return False
    if jax.distributed.is_initialized():
        return True
    kwargs = initialize_arguments(cfg, environ)
    try:
        jax.distributed.initialize(**kwargs)
    except RuntimeError as e:
        raise RuntimeError(f"jax.distributed.initialize({kwargs}) failed: {e}. It must run "
                           "before any jax computation, once per process, with the same "
                           "coordinator address and process count everywhere") from e
    return True


def is_main_process() -> bool:
    """Process 0 writes the run's files (config, metrics, result); the others only compute."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process has reached `name` (nothing to wait for with one process):
    e.g. every process checks an output folder before process 0 starts writing into it."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)
