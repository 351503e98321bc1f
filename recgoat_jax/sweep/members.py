"""A per-member function run over the member axis of a sweep group.

Each device takes its own slice of the members (`jax.shard_map` over the mesh's "data" axis;
the shared arguments, i.e. data, graphs and features, are replicated) and runs them `chunk`
at a time: `jax.vmap` inside a chunk, the chunks one after another (`jax.lax.map`).

- chunk = 1: every member runs the solo program (the same ops in the same order as a
  `recgoat-jax train` run, so its numbers are the solo run's), and a member that has stopped
  costs nothing (`lax.cond` skips its epoch).
- chunk > 1: the members of a chunk share every kernel launch, which fills an accelerator
  that one small model leaves idle; but batched gathers / scatters / segment sums are slower
  per member on this CPU (benchmarks/results/sweep_throughput.md), their reductions run in
  another order (members drift from solo runs by float rounding, amplified by training), and
  `lax.cond` turns into a select: a stopped member costs a full member until its chunk ends.
"""

from __future__ import annotations

from typing import Callable

import jax
from jax.sharding import Mesh, PartitionSpec as P

from recgoat_jax.train.parallel import DATA_AXIS


def vmap_chunk(setting: int, members_per_device: int, platform: str) -> int:
    """Members computed together by vmap on one device (`train.sweep_vmap`; 0 = auto:
    1 on CPU, all of a device's members on an accelerator)."""
    if setting == 0:
        return 1 if platform == "cpu" else members_per_device
    return max(1, min(setting, members_per_device))


def map_members(fn: Callable, chunk: int) -> Callable:
    """`fn(*member_args, *shared)` -> `f(member_args [m, ...] stacked, *shared)`, `chunk`
    members at a time (see the module docstring)."""
    def mapped(member_args: tuple, *shared):
        def one(args):
            return fn(*args, *shared)
        if chunk == 1:
            return jax.lax.map(one, member_args)
        return jax.lax.map(one, member_args, batch_size=chunk)

    return mapped


def over_mesh(fn: Callable, mesh: Mesh, chunk: int, n_shared: int) -> Callable:
    """`f(member_args: tuple of [S, ...] trees, *shared)` with the member axis split over the
    mesh's devices and `n_shared` replicated arguments; each device maps `fn` over its
    members with `map_members`. Returns [S, ...] outputs sharded like the members."""
    return jax.shard_map(map_members(fn, chunk), mesh=mesh,
                         in_specs=(P(DATA_AXIS),) + (P(),) * n_shared,
                         out_specs=P(DATA_AXIS), check_vma=False)
