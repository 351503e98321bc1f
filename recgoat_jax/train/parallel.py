"""Data parallelism as array placement: a 1-d device mesh with axis "data".

Parameters, optimizer state, RNG key and the model's inputs (graphs, features) are replicated
on every device; every training batch is sharded over "data" (its rows split evenly between
the devices); `jax.jit` (GSPMD) inserts the all-reduce that averages the gradients, because the
loss is a masked mean over the GLOBAL batch. The same compiled step therefore runs on one CPU,
on 8 forced CPU devices, on a GPU node or on a TPU pod, and gives the same numbers up to the
order of floating-point reductions: the epoch's shuffle, negatives and dropout keys are drawn
from one replicated key (threefry is partitionable), so no device count changes a draw.

The mesh is built with ``AxisType.Auto``: on jax 0.10 ``jax.make_mesh`` defaults to explicit
axes, under which gathering a replicated table with "data"-sharded indices is a type error
(STACK.md).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from recgoat_jax.config import ConfigError

DATA_AXIS = "data"


def make_mesh(n_devices: int = 0) -> Mesh:
    """A mesh of `n_devices` devices on axis "data" (0: every device of every process).

    Raises ConfigError when more devices are asked for than exist, or, with several processes,
    when the mesh would not take every process's devices (each process must own a part).
    """
    available = jax.device_count()
    if n_devices < 0 or n_devices > available:
        raise ConfigError(f"train.n_devices={n_devices}: expected 0 (all) or 1..{available} "
                         f"(the devices jax sees: {available})")
    n = n_devices or available
    if jax.process_count() > 1 and n != available:
        raise ConfigError(f"train.n_devices={n_devices}: with {jax.process_count()} processes "
                         f"the mesh must span all {available} devices; use 0")
    return jax.make_mesh((n,), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=jax.devices()[:n])


def data_size(mesh: Mesh) -> int:
    """Number of devices on the "data" axis."""
    return mesh.shape[DATA_AXIS]


def check_divisible(what: str, size: int, mesh: Mesh) -> None:
    """ConfigError unless `size` (a global batch) splits evenly over the "data" devices."""
    n = data_size(mesh)
    if size % n:
        raise ConfigError(f"{what}={size} must be divisible by the number of data-parallel "
                         f"devices ({n}); pick a multiple of {n} or set train.n_devices")


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def rows(mesh: Mesh) -> NamedSharding:
    """Sharding of an array whose leading axis (rows: nodes, or devices' blocks) is split
    over "data" (``train.sharding = "graph"``)."""
    return NamedSharding(mesh, P(DATA_AXIS))


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """Sharding of an array whose axis `batch_axis` is split over "data" (the rest replicated)."""
    return NamedSharding(mesh, P(*([None] * batch_axis), DATA_AXIS))


def place(tree: Any, sharding: NamedSharding) -> Any:
    """Put every leaf of a host (or device) pytree on the mesh with `sharding`.

    Works with several processes: each process builds only the shards its own devices hold
    (`jax.make_array_from_callback`), from a value every process has in full. Leaves that are
    None stay None.
    """
    def put(x):
        if isinstance(x, jax.Array) and x.is_fully_addressable and jax.process_count() == 1:
            return jax.device_put(x, sharding)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def constrain_batch(mesh: Mesh):
    """`constrain(tree) -> tree`: inside jit, shard every leaf's leading axis over "data"."""
    sharding = batch_sharding(mesh)

    def constrain(tree):
        return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)

    return constrain


def to_host(tree: Any) -> Any:
    """numpy copies of a pytree of arrays. An array sharded over several processes (a sweep's
    member axis on a multi-host mesh) is gathered from all of them: a collective, so every
    process must call this together."""
    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if x.is_fully_replicated:
                return np.asarray(x.addressable_data(0))  # every shard holds the whole value
            from jax.experimental import multihost_utils
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree.map(get, tree)
