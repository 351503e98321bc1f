"""Top-K ranking metrics as pure functions of a hit matrix (REFERENCE.md section 5).

Every function takes

  hits:        [B, Kmax] bool, ``hits[u, r]`` is True when the item ranked r-th (0-based) for
               user u is one of u's evaluation items;
  eval_counts: [B] int, |evaluation items of u|; 0 marks a padded / excluded user, whose
               metrics are all 0 (so a sum over users needs no separate mask);
  ks:          static cut-offs, each <= Kmax;

and returns one value per user and cut-off, shape [B, len(ks)] float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

# Order of the metric axis in `metrics_at_ks`; names used in result dicts are f"{name}@{k}".
METRIC_NAMES: tuple[str, ...] = ("recall", "ndcg", "precision", "hit")


def rank_discounts(k_max: int) -> np.ndarray:
    """Binary-gain DCG discounts 1 / log2(rank + 2) for ranks 0..k_max-1: [k_max] float64."""
    return 1.0 / np.log2(np.arange(k_max) + 2.0)


def _at_cutoffs(per_rank: jnp.ndarray, ks: Sequence[int],
                rank_weights: np.ndarray | None = None) -> jnp.ndarray:
    """Weighted sums of per_rank [B, Kmax] over ranks r < k, for each k: [B, len(ks)].

    A broadcast multiply-and-sum with a static [Kmax, len(ks)] mask rather than a cumsum (which
    takes XLA:CPU seconds to compile) or a matmul (TF32 on GPUs would round the weights).
    """
    k_max = per_rank.shape[1]
    weights = (np.arange(k_max)[:, None] < np.asarray(ks)[None, :]).astype(np.float32)
    if rank_weights is not None:
        weights = weights * rank_weights[:, None].astype(np.float32)
    return jnp.sum(per_rank[:, :, None] * weights[None], axis=1)


def hits_at_ks(hits: jnp.ndarray, ks: Sequence[int]) -> jnp.ndarray:
    """Number of hits among the first k ranks: [B, len(ks)] float32."""
    return _at_cutoffs(hits.astype(jnp.float32), ks)


def _has_eval(eval_counts: jnp.ndarray) -> jnp.ndarray:
    return (eval_counts > 0)[:, None]


def recall_at_ks(hits: jnp.ndarray, eval_counts: jnp.ndarray,
                 ks: Sequence[int]) -> jnp.ndarray:
    """hits in top-k / |eval items of u|. [B, len(ks)]"""
    counts = jnp.maximum(eval_counts, 1).astype(jnp.float32)[:, None]
    return jnp.where(_has_eval(eval_counts), hits_at_ks(hits, ks) / counts, 0.0)


def precision_at_ks(hits: jnp.ndarray, eval_counts: jnp.ndarray,
                    ks: Sequence[int]) -> jnp.ndarray:
    """hits in top-k / k. [B, len(ks)]"""
    k = jnp.asarray(ks, jnp.float32)[None, :]
    return jnp.where(_has_eval(eval_counts), hits_at_ks(hits, ks) / k, 0.0)


def hit_rate_at_ks(hits: jnp.ndarray, eval_counts: jnp.ndarray,
                   ks: Sequence[int]) -> jnp.ndarray:
    """1 when any of the top-k items is an eval item, else 0. [B, len(ks)]"""
    return (_has_eval(eval_counts) & (hits_at_ks(hits, ks) > 0)).astype(jnp.float32)


def ndcg_at_ks(hits: jnp.ndarray, eval_counts: jnp.ndarray,
               ks: Sequence[int]) -> jnp.ndarray:
    """DCG@k / IDCG@k, gains 1/log2(rank+2), IDCG over min(|eval items|, k) ranks. [B, len(ks)]"""
    discounts = rank_discounts(hits.shape[1])
    dcg = _at_cutoffs(hits.astype(jnp.float32), ks, rank_weights=discounts)
    # ideal_dcg[n]: DCG of n hits at the top, n = 0..Kmax (a host constant)
    ideal_dcg = np.concatenate([[0.0], np.cumsum(discounts)]).astype(np.float32)
    n_ideal = jnp.minimum(eval_counts[:, None], jnp.asarray(ks)[None, :])
    idcg = jnp.asarray(ideal_dcg)[n_ideal]
    return jnp.where(idcg > 0, dcg / jnp.where(idcg > 0, idcg, 1.0), 0.0)


def metrics_at_ks(hits: jnp.ndarray, eval_counts: jnp.ndarray,
                  ks: Sequence[int]) -> jnp.ndarray:
    """All metrics at every cut-off: [B, len(METRIC_NAMES), len(ks)] float32.

    Axis 1 follows METRIC_NAMES (recall, ndcg, precision, hit); axis 2 follows ``ks``.
    """
    return jnp.stack([recall_at_ks(hits, eval_counts, ks), ndcg_at_ks(hits, eval_counts, ks),
                      precision_at_ks(hits, eval_counts, ks),
                      hit_rate_at_ks(hits, eval_counts, ks)], axis=1)


def metric_keys(ks: Sequence[int]) -> list[tuple[int, int, str]]:
    """(metric axis index, k axis index, "name@k") for every entry of `metrics_at_ks`'s output."""
    return [(m, j, f"{name}@{k}") for m, name in enumerate(METRIC_NAMES)
            for j, k in enumerate(ks)]
