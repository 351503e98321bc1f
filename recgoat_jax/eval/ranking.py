"""Full ranking on device: score every item for every evaluation user, mask the user's
training items, take the top K, and average Recall / NDCG / Precision / HitRate@K.

Scores are dot products, ``scores[u, i] = <z_user[u], z_item[i]>`` (the popularity baseline
passes 1-d embeddings). Users are ranked ``user_batch`` at a time, so at most
``[user_batch, I]`` scores exist at once, never ``[U, I]``.

Layout (built once on host, static shapes, so one compiled step serves every batch and every
call): the evaluation users (those with >= 1 evaluation item), in ascending id order, are cut
into batches of B users, the last one padded with user 0 and ``eval_count = 0`` (a count of 0
is the padding mask: such a row contributes 0 to every sum). A batch's training and evaluation
items are COO lists ``(rows [P], cols [P])`` of (row in the batch, item id), padded to the
longest batch with ``col = I`` (out of range, dropped by the scatter). COO rather than a
``[B, L]`` per-user list keeps memory at O(pairs) when a few hub users have thousands of items.

Devices: the evaluator runs on a 1-d mesh with axis "data" (by default one device). Each user
batch is split into equal row blocks, one per device, and each block has its own COO lists with
rows relative to the block, so ``jax.shard_map`` runs the single-device computation on every
block with no communication but the final sum. The embeddings are replicated. With several
processes (``jax.distributed``) each process places only the blocks of its own devices.

Ties: ``jax.lax.top_k`` returns equal scores in ascending item-id order, so among tied items the
lower item id ranks first (the same as a stable argsort of the negated scores).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, PartitionSpec as P

from recgoat_jax.eval.metrics import METRIC_NAMES, metric_keys, metrics_at_ks
from recgoat_jax.train.parallel import DATA_AXIS, batch_sharding, place, replicated


class UserBatch(NamedTuple):
    """One batch of B evaluation users (a pytree of device arrays; P, Q fixed per evaluator).

    user_ids:    [B] int32, rows of z_user to rank (padding rows: user 0).
    eval_counts: [B] int32, |evaluation items| per row; 0 on padding rows.
    train_rows, train_cols: [P] int32, (row in batch, item) pairs to mask; padding col = I.
    eval_rows, eval_cols:   [Q] int32, (row in batch, item) relevant pairs; padding col = I.
    """

    user_ids: jax.Array
    eval_counts: jax.Array
    train_rows: jax.Array
    train_cols: jax.Array
    eval_rows: jax.Array
    eval_cols: jax.Array


def masked_top_k(z_user_batch: jax.Array, z_item: jax.Array, train_rows: jax.Array,
                 train_cols: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """Top-k items per row after masking training items: (scores [B, k'], items [B, k']) with
    k' = min(k, I), best first. Masked items score -inf; they appear only when fewer than k
    unmasked items exist. Ties go to the lower item id.

    Args:
      z_user_batch: [B, d]; z_item: [I, d].
      train_rows, train_cols: [P] (row, item) pairs to mask; entries with col >= I are padding.
    """
    # HIGHEST: GPUs otherwise run f32 matmuls in TF32, which reorders near-tied items.
    scores = jnp.matmul(z_user_batch, z_item.T, precision=jax.lax.Precision.HIGHEST,
                        preferred_element_type=jnp.float32)
    scores = scores.at[train_rows, train_cols].set(-jnp.inf, mode="drop")
    return jax.lax.top_k(scores, min(k, scores.shape[1]))


def batch_user_metrics(z_user_batch: jax.Array, z_item: jax.Array,
                       train_rows: jax.Array, train_cols: jax.Array,
                       eval_rows: jax.Array, eval_cols: jax.Array,
                       eval_counts: jax.Array, ks: Sequence[int]) -> jax.Array:
    """Metrics of one user batch: [B, len(METRIC_NAMES), len(ks)] float32.

    Pure and shape-static; the unit a multi-device version shards over the user axis B.

    Args:
      z_user_batch: [B, d] user embeddings of the batch's rows.
      z_item: [I, d] item embeddings.
      train_rows, train_cols: [P] (row, item) pairs whose scores are set to -inf before top-k;
        entries with col >= I are padding and ignored.
      eval_rows, eval_cols: [Q] (row, item) evaluation pairs; col >= I is padding.
      eval_counts: [B] |evaluation items| per row; rows with 0 yield all-zero metrics.
      ks: static cut-offs; a K > I ranks all I items (Precision@K still divides by K).
    """
    top_scores, top_items = masked_top_k(z_user_batch, z_item, train_rows, train_cols, max(ks))
    n_rows, n_items = z_user_batch.shape[0], z_item.shape[0]
    is_eval = jnp.zeros((n_rows, n_items), bool).at[eval_rows, eval_cols].set(True, mode="drop")
    # A masked (training) item reaches the top K only when fewer than K items remain; it is
    # never a hit.
    hits = jnp.take_along_axis(is_eval, top_items, axis=1) & (top_scores > -jnp.inf)
    # K > I: the list holds only I items; the missing ranks are misses.
    hits = jnp.pad(hits, ((0, 0), (0, max(ks) - hits.shape[1])))
    return metrics_at_ks(hits, eval_counts, ks)


def _batch_metrics(z_user: jax.Array, z_item: jax.Array, batch: UserBatch,
                   ks: tuple[int, ...]) -> jax.Array:
    """`batch_user_metrics` for the users of `batch`, gathered from z_user [U, d]."""
    return batch_user_metrics(z_user[batch.user_ids], z_item, batch.train_rows,
                              batch.train_cols, batch.eval_rows, batch.eval_cols,
                              batch.eval_counts, ks)


def _sharded_batch_metrics(mesh: Mesh, ks: tuple[int, ...]):
    """`_batch_metrics` run on each "data" block of a user batch: (z_user, z_item, batch) ->
    [B, M, K] sharded on B. Every block's COO rows are relative to the block."""
    return jax.shard_map(functools.partial(_batch_metrics, ks=ks), mesh=mesh,
                         in_specs=(P(), P(), P(DATA_AXIS)), out_specs=P(DATA_AXIS))


def _check_pairs(name: str, pairs, n_users: int, n_items: int) -> np.ndarray:
    pairs = np.asarray(pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or (
            pairs.size and not np.issubdtype(pairs.dtype, np.integer)):
        raise ValueError(f"RankingEvaluator: {name} must be an integer [N, 2] array of "
                         f"(user, item), got shape {pairs.shape} dtype {pairs.dtype}")
    pairs = pairs.astype(np.int64).reshape(-1, 2)
    for col, what, n in ((0, "user", n_users), (1, "item", n_items)):
        bad = np.flatnonzero((pairs[:, col] < 0) | (pairs[:, col] >= n))
        if bad.size:
            raise ValueError(f"RankingEvaluator: {name} row {int(bad[0])} has {what} id "
                             f"{int(pairs[bad[0], col])}: expected 0 <= id < {n}")
    return np.unique(pairs, axis=0)


def _batched_coo(pairs: np.ndarray, position: np.ndarray, batch_size: int, n_batches: int,
                 sentinel: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-batch COO (rows, cols), each [n_batches, P], of the pairs of evaluation users.

    position: [U] index of each user in the evaluation-user order, -1 for other users.
    """
    pos = position[pairs[:, 0]]
    keep = pos >= 0
    pos, items = pos[keep], pairs[keep, 1]
    batch_of = pos // batch_size
    order = np.argsort(batch_of, kind="stable")
    pos, items, batch_of = pos[order], items[order], batch_of[order]
    per_batch = np.bincount(batch_of, minlength=n_batches)
    width = max(int(per_batch.max(initial=0)), 1)
    starts = np.concatenate([[0], np.cumsum(per_batch)[:-1]])
    slot = np.arange(len(pos)) - starts[batch_of]
    rows = np.zeros((n_batches, width), np.int32)
    cols = np.full((n_batches, width), sentinel, np.int32)
    rows[batch_of, slot] = pos % batch_size
    cols[batch_of, slot] = items
    return rows, cols


class RankingEvaluator:
    """Full-ranking evaluation of (z_user, z_item) against one split, built once on host.

    Args:
      n_users, n_items: U and I.
      train_pairs: [N, 2] (user, item) pairs masked out of the ranking (MMRec masks the
        training split, for valid and for test alike).
      eval_pairs: [M, 2] (user, item) relevant pairs (the valid or the test split); users
        without any are not evaluated. Must not overlap train_pairs.
      ks: cut-offs K (a K > n_items ranks all items; Precision@K still divides by K).
      user_batch: users ranked per step (lowered to the number of evaluation users when that
        is smaller, then raised to a multiple of the devices); memory per step and device is
        user_batch / devices x I scores.
      mesh: a mesh with axis "data" to split every user batch over; None: the first device.

    Calling it returns ``{"recall@K", "ndcg@K", "precision@K", "hit@K"}`` for every K, each the
    mean over evaluation users. One jit-compiled step runs every batch; it compiles on the first
    call and again only if the embedding shapes or dtypes change.
    """

    def __init__(self, n_users: int, n_items: int, train_pairs, eval_pairs,
                 ks: Sequence[int] = (5, 10, 20, 50), user_batch: int = 1024,
                 mesh: Mesh | None = None):
        if n_users <= 0 or n_items <= 0:
            raise ValueError(f"RankingEvaluator: n_users and n_items must be positive, got "
                             f"{n_users} and {n_items}")
        ks = tuple(int(k) for k in ks)
        if not ks or len(set(ks)) != len(ks) or min(ks) < 1:
            raise ValueError(f"RankingEvaluator: ks must be distinct positive integers, "
                             f"got {ks}")
        if user_batch < 1:
            raise ValueError(f"RankingEvaluator: user_batch must be >= 1, got {user_batch}")
        train = _check_pairs("train_pairs", train_pairs, n_users, n_items)
        held = _check_pairs("eval_pairs", eval_pairs, n_users, n_items)
        overlap = np.intersect1d(train[:, 0] * n_items + train[:, 1],
                                 held[:, 0] * n_items + held[:, 1])
        if overlap.size:
            u, i = divmod(int(overlap[0]), n_items)
            raise ValueError(f"RankingEvaluator: (user {u}, item {i}) is in both train_pairs "
                             f"and eval_pairs ({overlap.size} such pairs): a masked item can "
                             "never be a hit")
        eval_users, eval_counts = np.unique(held[:, 0], return_counts=True)
        if eval_users.size == 0:
            raise ValueError("RankingEvaluator: eval_pairs is empty: no user to evaluate")

        self.n_users, self.n_items, self.ks = n_users, n_items, ks
        self.eval_user_ids = eval_users  # [n_eval] ascending; row order of per_user_metrics
        self.n_eval_users = int(eval_users.size)
        if mesh is None:
            mesh = Mesh(np.array(jax.devices()[:1]), (DATA_AXIS,))
        if DATA_AXIS not in mesh.shape:
            raise ValueError(f"RankingEvaluator: the mesh needs an axis {DATA_AXIS!r}, "
                             f"got axes {tuple(mesh.shape)}")
        self.mesh = mesh
        n_blocks = mesh.shape[DATA_AXIS]
        block = -(-min(int(user_batch), self.n_eval_users) // n_blocks)  # users per device
        self.user_batch = block * n_blocks
        n_batches = -(-self.n_eval_users // self.user_batch)
        padded = n_batches * self.user_batch

        position = np.full(n_users, -1, np.int64)
        position[eval_users] = np.arange(self.n_eval_users)
        user_ids = np.zeros(padded, np.int32)
        user_ids[:self.n_eval_users] = eval_users
        counts = np.zeros(padded, np.int32)
        counts[:self.n_eval_users] = eval_counts
        # COO per block of `block` users (rows relative to the block), the blocks of one batch
        # laid end to end: [n_batches, n_blocks * P], split over the devices like the users.
        coo = [c.reshape(n_batches, -1) for pairs in (train, held)
               for c in _batched_coo(pairs, position, block, n_batches * n_blocks, n_items)]
        shape_b = (n_batches, self.user_batch)
        split = batch_sharding(mesh)
        self._replicated = replicated(mesh)
        self._batches = tuple(
            UserBatch(*place((user_ids.reshape(shape_b)[b], counts.reshape(shape_b)[b],
                              *(a[b] for a in coo)), split))
            for b in range(n_batches))
        per_user = _sharded_batch_metrics(mesh, ks)
        everywhere = self._replicated

        def accumulate(sums, z_user, z_item, batch):
            # gather the [B, M, K] per-user metrics before summing, so the sum runs in the
            # same order on any number of devices (identical means, not just close ones)
            metrics = jax.lax.with_sharding_constraint(per_user(z_user, z_item, batch),
                                                       everywhere)
            return sums + jnp.sum(metrics, 0)

        self._accumulate = jax.jit(accumulate, out_shardings=everywhere)
        self._per_user = jax.jit(per_user)

    def _check_embeddings(self, z_user, z_item) -> tuple[jax.Array, jax.Array]:
        """The embeddings replicated on the mesh (moved once, not once per batch), shape-checked."""
        z_user, z_item = (x if isinstance(x, jax.Array) else jnp.asarray(x)
                          for x in (z_user, z_item))
        if (z_user.ndim != 2 or z_item.ndim != 2 or z_user.shape[0] != self.n_users
                or z_item.shape[0] != self.n_items or z_user.shape[1] != z_item.shape[1]):
            raise ValueError(f"RankingEvaluator: expected z_user [{self.n_users}, d] and "
                             f"z_item [{self.n_items}, d], got {tuple(z_user.shape)} and "
                             f"{tuple(z_item.shape)}")
        return jax.device_put((z_user, z_item), self._replicated)

    def __call__(self, z_user: jax.Array, z_item: jax.Array) -> dict[str, float]:
        """Mean metrics over evaluation users. z_user: [U, d], z_item: [I, d]."""
        z_user, z_item = self._check_embeddings(z_user, z_item)
        sums = jax.device_put(jnp.zeros((len(METRIC_NAMES), len(self.ks)), jnp.float32),
                              self._replicated)
        for batch in self._batches:
            sums = self._accumulate(sums, z_user, z_item, batch)
        means = np.asarray(sums.addressable_data(0), np.float64) / self.n_eval_users
        return {key: float(means[m, j]) for m, j, key in metric_keys(self.ks)}

    def per_user_metrics(self, z_user: jax.Array, z_item: jax.Array) -> dict[str, np.ndarray]:
        """Each metric per evaluation user: {"recall@K": [n_eval] float32, ...}, rows in the
        order of ``eval_user_ids``."""
        z_user, z_item = self._check_embeddings(z_user, z_item)
        per_batch = [self._per_user(z_user, z_item, batch) for batch in self._batches]
        values = np.concatenate([np.asarray(multihost_utils.process_allgather(m, tiled=True))
                                 for m in per_batch])[:self.n_eval_users]
        return {key: values[:, m, j] for m, j, key in metric_keys(self.ks)}

    def compiled_step_count(self) -> int:
        """How many programs the mean-metrics step has compiled (1 after any number of calls
        with same-shaped embeddings)."""
        return self._accumulate._cache_size()
