"""Synthetic datasets with planted structure, sized like the field's benchmarks.

The generative story:

1. Latent factors: users ``P [U, k]`` and items ``Q [I, k]`` from N(0, 1), ``k = 16``; every
   item also has a popularity ``rank^-a`` (a random permutation of ranks 1..I, Zipf-like).
2. Affinity logits ``l(u, i) = tau * <P_u, Q_i> / sqrt(k) - a * log(rank_i)``.
3. Each user gets ``n_u`` interactions (at least 5, or n_interactions / U if less; a
   log-normal share of the rest, so a few users are heavy), drawn WITHOUT replacement from
   ``softmax_i l(u, i)``, giving unique (user, item) pairs summing to
   exactly ``n_interactions`` (sampling costs O(U I): seconds for Baby, minutes for
   Electronics).
3b. The `clustered` sampler (preset `xl`), for sizes where O(U I) is out of reach: the items
   are grouped into C = 1024 clusters (each item joins the nearest of C items' factors, by
   inner product); a user draws a cluster c from ``softmax_c tau <P_u, mu_c> / sqrt(k) +
   log m_c`` (mu_c the mean factor of cluster c, m_c its popularity mass), then an item of c
   by popularity, without replacement as above. The user's taste acts through the clusters
   only; O(U C k + N log I) time.
4. The split of `split.split_per_user` (MMRec's per-user 8:1:1 rule).
5. Modality features ``m`` of dimension ``f_m`` with informativeness ``s in [0, 1]``:
   ``x = (s * z(Q W_m) + (1 - s) * noise) / sqrt(s^2 + (1 - s)^2)`` with ``W_m [k, f_m]`` a
   random projection, ``z`` column standardisation and noise N(0, 1), so every column has unit
   variance; s = 0 is pure noise and s = 1 is noiseless. Then, like the real encoders' output:
   text rows are L2-normalised (sentence-transformer style), image features pass through a
   ReLU (non-negative CNN style); other modalities stay as they are.
6. Optional user text features (user text profiles), ``user_features``:
   - ``"history"`` (the default): made like the text features above, but from
     ``H [U, k]``, each user's mean planted item factor ``Q_i`` over their TRAINING items only;
     a user with no training item gets a noise-only unit row. Real profiles are written from
     a user's training history (the paper's LLM summaries, this project's `profiles`), so
     these carry nothing the training interactions do not: the best case of such a profile
     (the mean of the items' planted factors, not of their noisy features).
   - ``"oracle"``: made from ``P``, the planted user factors that also draw the held-out
     interactions. No real profile has that information: use it only to study the model
     with a leak on purpose, never for a result.

Every component draws from its own generator seeded by ``(seed, component name)``, so changing
a feature's signal or dimension leaves the interactions (and the other features) unchanged.
Features are float32 and built in row chunks; interactions are drawn in chunks of users, so
the Electronics-sized preset stays within a few GiB.
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np

from recgoat_jax.data.dataset import Dataset
from recgoat_jax.data.split import split_per_user

LATENT_DIM = 16
AFFINITY_SCALE = 3.0  # tau
POPULARITY_EXPONENT = 0.7  # a: item weight ~ rank^-a inside the softmax
MIN_PER_USER = 5  # like the 5-core filtering of the Amazon data
HEAVY_USER_SIGMA = 1.0  # log-normal spread of the interactions above the minimum
SAMPLE_CHUNK = 1 << 22  # logits per chunk of users (16 MiB of float32)
FEATURE_CHUNK = 1 << 22  # feature entries per chunk of rows (16 MiB of float32)


@dataclasses.dataclass(frozen=True)
class Preset:
    n_users: int
    n_items: int
    n_interactions: int
    feature_dims: dict[str, int]
    signal: dict[str, float]
    user_feature_dim: int | None = None
    sampler: str = "exact"  # "exact": O(U I) softmax draws; "clustered": O(U C + N), see 3b.


_AMAZON_FEATURES = {"text": 384, "image": 4096}
_DEFAULT_SIGNAL = {"text": 0.7, "image": 0.3, "audio": 0.3}

PRESETS: dict[str, Preset] = {
    # The golden problem's shapes (shared/golden): unit tests.
    "tiny": Preset(60, 45, 600, {"text": 24, "image": 40}, _DEFAULT_SIGNAL, 24),
    # The README's default job: LightGCN learns it in about a minute on 2 CPU cores.
    "small": Preset(3000, 2000, 60000, {"text": 128, "image": 256}, _DEFAULT_SIGNAL, 128),
    # Sparse long tail (experiments/protocol.py): like `small` but twice the items and half the
    # interactions, so about 65% of the items have fewer than 5 training interactions (about
    # 15% none: only their content describes them); a LightGCN epoch costs no more than small's.
    "longtail": Preset(3000, 4000, 30000, {"text": 128, "image": 256}, _DEFAULT_SIGNAL, 128),
    # Sizes of the MMRec Amazon sets and of TikTok (no user features: those come from `encode`).
    "baby": Preset(19445, 7050, 160792, _AMAZON_FEATURES, _DEFAULT_SIGNAL),
    "sports": Preset(35598, 18357, 296337, _AMAZON_FEATURES, _DEFAULT_SIGNAL),
    "electronics": Preset(192403, 63001, 1689188, _AMAZON_FEATURES, _DEFAULT_SIGNAL),
    "tiktok": Preset(9319, 6710, 59541, {"text": 768, "image": 128, "audio": 128},
                     _DEFAULT_SIGNAL),
    # Bigger than one device's share (graph sharding, docs/multihost.md): the scale of the
    # full Amazon review sets. The exact sampler would cost O(U I) = 2e12 logits: clustered.
    "xl": Preset(2_000_000, 1_000_000, 30_000_000, {"text": 384, "image": 512},
                 _DEFAULT_SIGNAL, sampler="clustered"),
}
SAMPLERS = ("exact", "clustered")
N_CLUSTERS = 1024  # item clusters of the clustered sampler


def _rng(seed: int, component: str) -> np.random.Generator:
    """A generator for one component, independent of every other component's draws."""
    return np.random.default_rng([seed, zlib.crc32(component.encode())])


@dataclasses.dataclass(frozen=True)
class Planted:
    """The hidden truth behind a synthetic dataset.

    Attributes:
      user_factors: ``[U, k]`` float32.
      item_factors: ``[I, k]`` float32.
      item_log_popularity: ``[I]`` float32, ``-a * log(rank)``.
      affinity_scale: tau.
    """

    user_factors: np.ndarray
    item_factors: np.ndarray
    item_log_popularity: np.ndarray
    affinity_scale: float

    def logits(self, users: np.ndarray) -> np.ndarray:
        """Affinity logits ``[len(users), I]`` float32: the softmax the users draw from."""
        k = self.user_factors.shape[1]
        scale = np.float32(self.affinity_scale / np.sqrt(k))
        return (self.user_factors[users] @ self.item_factors.T) * scale \
            + self.item_log_popularity


def planted_structure(n_users: int, n_items: int, seed: int, latent_dim: int = LATENT_DIM,
                      affinity_scale: float = AFFINITY_SCALE,
                      popularity_exponent: float = POPULARITY_EXPONENT) -> Planted:
    """The latent factors and popularity that `make_synthetic` draws interactions from."""
    rng = _rng(seed, "factors")
    users = rng.standard_normal((n_users, latent_dim), dtype=np.float32)
    items = rng.standard_normal((n_items, latent_dim), dtype=np.float32)
    rank = rng.permutation(n_items) + 1
    log_pop = (-popularity_exponent * np.log(rank)).astype(np.float32)
    return Planted(users, items, log_pop, affinity_scale)


def probe_r2(features: np.ndarray, factors: np.ndarray) -> float:
    """Held-out R^2 of a least-squares linear probe from `features` ``[N, f]`` to planted
    `factors` ``[N, k]`` (fit on the first half of the rows, scored on the second): how much of
    the hidden taste a modality carries (about 0 for noise, near 1 for a noiseless modality)."""
    x = np.concatenate([features, np.ones((len(features), 1), features.dtype)], axis=1)
    half = len(x) // 2
    coef, *_ = np.linalg.lstsq(x[:half], factors[:half], rcond=None)
    residual = factors[half:] - x[half:] @ coef
    return float(1.0 - residual.var() / factors[half:].var())


def _interactions_per_user(n_users: int, n_items: int, n_interactions: int,
                           seed: int) -> np.ndarray:
    """``[U]`` int64 counts summing to `n_interactions`, each in [min, I // 2]."""
    minimum = min(MIN_PER_USER, n_interactions // n_users)
    cap = max(minimum, n_items // 2)
    if not n_users * max(minimum, 1) <= n_interactions <= n_users * cap:
        raise ValueError(f"n_interactions = {n_interactions}: expected between "
                         f"{n_users * max(minimum, 1)} and {n_users * cap} for {n_users} users "
                         f"and {n_items} items")
    rng = _rng(seed, "counts")
    share = rng.lognormal(0.0, HEAVY_USER_SIGMA, n_users)
    counts = minimum + rng.multinomial(n_interactions - n_users * minimum, share / share.sum())
    while (counts > cap).any():  # hand the excess of capped users to the others
        excess = int((counts - cap).clip(min=0).sum())
        counts = counts.clip(max=cap)
        room = share * (counts < cap)
        counts += rng.multinomial(excess, room / room.sum())
    return counts.astype(np.int64)


def _first_distinct(rows: np.ndarray, values: np.ndarray, n_rows: int,
                    n_take: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ragged draws grouped by row (`rows` ``[D]`` ascending, `values` ``[D]`` in draw
    order), mark the first ``n_take[r]`` distinct values of each row r.

    Returns ``(chosen [D] bool, n_distinct [n_rows])``.
    """
    if len(rows) == 0:
        return np.zeros(0, dtype=bool), np.zeros(n_rows, dtype=np.int64)
    key = rows.astype(np.int64) * (int(values.max()) + 1) + values
    order = np.argsort(key, kind="stable")
    first_in_sorted = np.ones(len(key), dtype=bool)
    first_in_sorted[1:] = key[order][1:] != key[order][:-1]
    is_first = np.zeros(len(key), dtype=bool)
    is_first[order[first_in_sorted]] = True  # stable sort: the earliest draw of each value
    seen = np.cumsum(is_first)
    row_start = np.searchsorted(rows, np.arange(n_rows))
    seen_before_row = np.where(row_start > 0, seen[np.maximum(row_start - 1, 0)], 0)
    rank = seen - seen_before_row[rows]  # 1-based rank among the row's distinct values
    n_distinct = np.bincount(rows, weights=is_first, minlength=n_rows).astype(np.int64)
    return is_first & (rank <= n_take[rows]), n_distinct


def _inverse_cdf_draws(blocks: np.ndarray, block_cdf: np.ndarray, rows: np.ndarray,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One item per entry of `rows`, with probability proportional to its weight.

    Args:
      blocks: ``[C, n_blocks, block]`` non-negative item weights (padding weight 0).
      block_cdf: ``[C, n_blocks]`` cumulative block masses.
      rows: ``[D]`` ascending row of each draw.
    Returns:
      ``(rows, items)`` ``[D']``: draws that float rounding pushed past a block's or row's
      total, or onto a weight-0 item (about never), are left out.
    """
    n_rows, n_blocks, block = blocks.shape
    unit = rng.random(len(rows))
    total = block_cdf[:, -1:].astype(np.float64)
    # Rows' CDFs laid end to end (row r spans (r, r + 1]): one searchsorted for every draw.
    stacked = (block_cdf / total + np.arange(n_rows)[:, None]).ravel()
    b = np.searchsorted(stacked, rows + unit, side="right") - rows * n_blocks
    b_ok = b < n_blocks
    b = np.minimum(b, n_blocks - 1)
    before = np.where(b > 0, block_cdf[rows, np.maximum(b - 1, 0)], 0.0)
    residual = unit * total[rows, 0] - before
    in_block = blocks[rows, b]  # [D, block]
    j = (np.cumsum(in_block, axis=1) <= residual[:, None]).sum(axis=1)
    j_ok = j < block
    j = np.minimum(j, block - 1)
    ok = b_ok & j_ok & (in_block[np.arange(len(rows)), j] > 0)  # never a weight-0 item
    return rows[ok], b[ok] * block + j[ok]


def _draw_interactions(planted: Planted, counts: np.ndarray, seed: int) -> np.ndarray:
    """``[sum(counts), 2]`` int64 unique (user, item) pairs, grouped by user.

    User u's items are ``counts[u]`` draws without replacement from
    ``softmax(planted.logits(u))``: draws with replacement keeping the first ``counts[u]``
    distinct items, which is the same distribution as successive sampling without
    replacement (users short of distinct items after a round draw again). Each draw is an
    inverse-CDF lookup in two levels (a block of ~sqrt(I) items, then the item in it), so no
    full per-row cumulative sum is needed. O(U I) time, in user chunks of O(SAMPLE_CHUNK) memory.
    """
    n_users, n_items = len(counts), len(planted.item_factors)
    block = int(np.ceil(np.sqrt(n_items)))
    n_blocks = -(-n_items // block)
    width = n_blocks * block
    rng = _rng(seed, "interactions")
    chunk = max(1, SAMPLE_CHUNK // width)
    # Padding items get logit -1e4: probability exactly 0 after exp.
    item_side = np.zeros((planted.item_factors.shape[1] + 1, width), dtype=np.float32)
    item_side[:-1, :n_items] = planted.item_factors.T
    item_side[-1] = -1e4
    item_side[-1, :n_items] = planted.item_log_popularity
    scale = np.float32(planted.affinity_scale / np.sqrt(planted.item_factors.shape[1]))
    user_side = np.concatenate([planted.user_factors * scale,
                                np.ones((n_users, 1), np.float32)], axis=1)
    buffer = np.empty((chunk, width), dtype=np.float32)
    out = []
    for start in range(0, n_users, chunk):
        users = np.arange(start, min(start + chunk, n_users))
        c = len(users)
        weights = buffer[:c]  # [c, width]: logits, then unnormalised probabilities in place
        np.matmul(user_side[users], item_side, out=weights)
        weights -= weights.max(axis=1, keepdims=True)
        np.exp(weights, out=weights)
        blocks = weights.reshape(c, n_blocks, block)
        block_cdf = np.cumsum(blocks.sum(axis=2), axis=1)  # [c, n_blocks]
        n_take = counts[users]
        todo, n_draws = np.arange(c), (5 * n_take) // 4 + 4
        drawn_rows, drawn_items = [], []
        for _ in range(8):
            r, i = _inverse_cdf_draws(blocks, block_cdf, np.repeat(todo, n_draws[todo]), rng)
            drawn_rows.append(r)
            drawn_items.append(i)
            rows, items = np.concatenate(drawn_rows), np.concatenate(drawn_items)
            order = np.argsort(rows, kind="stable")  # by row, draw order kept within a row
            rows, items = rows[order], items[order]
            chosen, n_distinct = _first_distinct(rows, items, c, n_take)
            todo = np.flatnonzero(n_distinct < n_take)
            if todo.size == 0:
                break
            n_draws = 2 * (n_take - n_distinct) + 8
        done = chosen & ~np.isin(rows, todo)
        picked = [np.stack([users[rows[done]], items[done]], axis=1)]
        for r in todo:  # still short after 8 rounds: a user concentrated on very few items
            have = items[chosen & (rows == r)]
            full = _draw_one(weights[r, :n_items], have, int(n_take[r]), rng)
            picked.append(np.stack([np.full(len(full), users[r]), full], axis=1))
        out.extend(picked)
    pairs = np.concatenate(out)
    return pairs[np.argsort(pairs[:, 0], kind="stable")]


def _item_clusters(planted: Planted, n_clusters: int, seed: int) -> np.ndarray:
    """``[I]`` cluster of each item: the nearest (by inner product) of `n_clusters` items'
    factors, chosen at random."""
    rng = _rng(seed, "clusters")
    items = planted.item_factors
    centres = items[rng.choice(len(items), size=min(n_clusters, len(items)), replace=False)]
    out = np.empty(len(items), np.int64)
    chunk = max(1, SAMPLE_CHUNK // len(centres))
    for start in range(0, len(items), chunk):
        out[start:start + chunk] = np.argmax(items[start:start + chunk] @ centres.T, axis=1)
    return out


def _draw_interactions_clustered(planted: Planted, counts: np.ndarray, seed: int,
                                 n_clusters: int = N_CLUSTERS) -> np.ndarray:
    """`_draw_interactions` for large U x I (module docstring, 3b): ``[sum(counts), 2]``
    int64 unique (user, item) pairs, grouped by user."""
    n_users, k = len(counts), planted.item_factors.shape[1]
    rng = _rng(seed, "interactions")
    cluster = _item_clusters(planted, n_clusters, seed)
    c = int(cluster.max()) + 1
    weight = np.exp(planted.item_log_popularity.astype(np.float64))
    order = np.argsort(cluster, kind="stable")  # items grouped by cluster
    size = np.bincount(cluster, minlength=c)
    start = np.concatenate([[0], np.cumsum(size)[:-1]])
    mass = np.bincount(cluster, weights=weight, minlength=c)
    # per cluster, the CDF of its items' popularity, laid end to end (cluster j spans (j, j+1])
    within = np.cumsum(weight[order]) - np.repeat(np.cumsum(mass) - mass, size)
    stacked = within / np.repeat(mass, size) + np.repeat(np.arange(c), size)
    centre = np.zeros((c, k))
    np.add.at(centre, cluster, planted.item_factors)
    centre = (centre / np.maximum(size, 1)[:, None]).astype(np.float32)
    scale = np.float32(planted.affinity_scale / np.sqrt(k))
    log_mass = np.log(np.maximum(mass, 1e-300)).astype(np.float32)
    out = []
    chunk = max(1, SAMPLE_CHUNK // c)
    for first in range(0, n_users, chunk):
        users = np.arange(first, min(first + chunk, n_users))
        logits = (planted.user_factors[users] @ centre.T) * scale + log_mass  # [u, C]
        logits -= logits.max(axis=1, keepdims=True)
        cdf = np.cumsum(np.exp(logits, dtype=np.float64), axis=1)
        cdf /= cdf[:, -1:]
        cdf += np.arange(len(users))[:, None]  # row r's CDF spans (r, r + 1]: one searchsorted
        cdf = cdf.ravel()
        n_take = counts[users]
        todo, n_draws = np.arange(len(users)), (5 * n_take) // 4 + 4
        drawn_rows, drawn_items = [], []
        for _ in range(16):
            rows = np.repeat(todo, n_draws[todo])
            pick = np.searchsorted(cdf, rows + rng.random(len(rows)), side="left") - rows * c
            pick = np.clip(pick, 0, c - 1)
            slot = np.searchsorted(stacked, pick + rng.random(len(rows)), side="left")
            slot = np.clip(slot, start[pick], start[pick] + size[pick] - 1)
            drawn_rows.append(rows)
            drawn_items.append(order[slot])
            all_rows, all_items = np.concatenate(drawn_rows), np.concatenate(drawn_items)
            keep = np.argsort(all_rows, kind="stable")
            all_rows, all_items = all_rows[keep], all_items[keep]
            chosen, n_distinct = _first_distinct(all_rows, all_items, len(users), n_take)
            todo = np.flatnonzero(n_distinct < n_take)
            if todo.size == 0:
                break
            n_draws = 2 * (n_take - n_distinct) + 8
        done = chosen & ~np.isin(all_rows, todo)
        out.append(np.stack([users[all_rows[done]], all_items[done]], axis=1))
        for r in todo:  # a heavy user whose clusters ran dry: the rest by popularity alone
            have = all_items[chosen & (all_rows == r)]
            full = _draw_one(weight, have, int(n_take[r]), rng)
            out.append(np.stack([np.full(len(full), users[r]), full], axis=1))
    pairs = np.concatenate(out)
    return pairs[np.argsort(pairs[:, 0], kind="stable")]


def _draw_one(weights: np.ndarray, have: np.ndarray, n_take: int,
              rng: np.random.Generator) -> np.ndarray:
    """Continue successive sampling without replacement by `weights` ``[I]`` after the
    distinct items `have` (in draw order) until there are `n_take`; returns ``[n_take]``."""
    p = weights.astype(np.float64)
    p[have] = 0.0
    n_more = n_take - len(have)
    if np.count_nonzero(p) < n_more:  # fewer items left with mass than asked: allow any
        p[p == 0] = 1e-12
        p[have] = 0.0
    more = rng.choice(len(p), size=n_more, replace=False, p=p / p.sum())
    return np.concatenate([have, more])


def make_features(factors: np.ndarray, dim: int, signal: float, kind: str,
                  rng: np.random.Generator) -> np.ndarray:
    """Noisy random projection of `factors` ``[N, k]`` -> float32 ``[N, dim]``.

    ``kind`` "text": unit-norm rows; "image": ReLU (non-negative); anything else: as mixed.
    Columns are standardised before the post-processing (see the module docstring).
    """
    if not 0.0 <= signal <= 1.0:
        raise ValueError(f"feature signal for '{kind}' is {signal}: expected 0 <= s <= 1")
    n, k = factors.shape
    projection = rng.standard_normal((k, dim), dtype=np.float32) / np.float32(np.sqrt(k))
    # Exact column moments of factors @ projection, to standardise without materialising it.
    mean = factors.mean(0, dtype=np.float64) @ projection
    cov = np.cov(factors.astype(np.float64), rowvar=False, bias=True).reshape(k, k)
    std = np.sqrt(np.einsum("kd,kl,ld->d", projection, cov, projection))
    norm = 1.0 / np.hypot(signal, 1.0 - signal)
    # x = factors @ weight - offset + noise_scale * noise, folding standardising and mixing.
    weight = (projection * (signal * norm / np.maximum(std, 1e-12))).astype(np.float32)
    offset = (mean * (signal * norm / np.maximum(std, 1e-12))).astype(np.float32)
    noise_scale = np.float32((1.0 - signal) * norm)
    out = np.empty((n, dim), dtype=np.float32)
    chunk = max(1, FEATURE_CHUNK // dim)
    for start in range(0, n, chunk):
        x = out[start:start + chunk]
        rng.standard_normal(x.shape, dtype=np.float32, out=x)
        x *= noise_scale
        x += factors[start:start + chunk] @ weight
        x -= offset
        if kind == "text":
            x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.float32(1e-12))
        elif kind == "image":
            np.maximum(x, 0.0, out=x)
    return out


USER_FEATURES = ("history", "oracle")


def history_factors(train: np.ndarray, item_factors: np.ndarray,
                    n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """Each user's mean planted item factor over their training items.

    Args:
      train: ``[N, 2]`` (user, item) training pairs.
      item_factors: ``[I, k]`` planted item factors ``Q``.
      n_users: U.
    Returns:
      ``(history [U, k] float32, has_history [U] bool)``; rows without a training item are 0.
    """
    counts = np.bincount(train[:, 0], minlength=n_users)
    sums = np.zeros((n_users, item_factors.shape[1]), np.float64)
    np.add.at(sums, train[:, 0], item_factors[train[:, 1]])
    has = counts > 0
    sums[has] /= counts[has, None]
    return sums.astype(np.float32), has


def user_text_features(dataset: Dataset, planted: Planted, dim: int, signal: float, seed: int,
                       kind: str = "history") -> np.ndarray:
    """User text profiles ``[U, dim]`` float32 of a synthetic dataset (module docstring, 6.).

    Args:
      dataset: the interactions; "history" reads ``dataset.train`` and nothing else.
      planted: the hidden truth `dataset` was drawn from.
      dim, signal: feature dimension and informativeness in [0, 1] (as `make_features`).
      seed: the generation seed.
      kind: "history" (from the training items) or "oracle" (from the planted user factors,
        which also drew the held-out interactions: a leak).
    """
    if kind not in USER_FEATURES:
        raise ValueError(f"user_features = {kind!r}: expected one of {USER_FEATURES}")
    rng = _rng(seed, "user_features/text")
    if kind == "oracle":
        return make_features(planted.user_factors, dim, signal, "text", rng)
    history, has = history_factors(dataset.train, planted.item_factors, dataset.n_users)
    out = np.empty((dataset.n_users, dim), np.float32)
    if has.any():
        out[has] = make_features(history[has], dim, signal, "text", rng)
    if not has.all():  # nothing to summarise: a unit-norm row of pure noise
        noise = _rng(seed, "user_features/text/no_history").standard_normal(
            (int((~has).sum()), dim), dtype=np.float32)
        out[~has] = noise / np.linalg.norm(noise, axis=1, keepdims=True)
    return out


def make_synthetic(n_users: int, n_items: int, n_interactions: int,
                   feature_dims: dict[str, int], signal: dict[str, float],
                   user_feature_dim: int | None = None, seed: int = 2025,
                   name: str = "synthetic", *, affinity_scale: float = AFFINITY_SCALE,
                   popularity_exponent: float = POPULARITY_EXPONENT,
                   user_features: str = "history", sampler: str = "exact") -> Dataset:
    """A synthetic `Dataset` (see the module docstring for how it is made).

    Args:
      n_users, n_items: U, I.
      n_interactions: total unique (user, item) pairs over all splits, exactly.
      feature_dims: ``{modality: f_m}`` item features to make (``"text"``, ``"image"``, ...).
      signal: ``{modality: s}`` informativeness in [0, 1] of each modality; user features
        use ``signal["user_text"]`` if given, else ``signal["text"]``.
      user_feature_dim: dimension of user text features ``user_features["text"]``; None: none.
      seed: everything is a deterministic function of the arguments.
      name: the dataset's name; its source is ``"synthetic:<name>"``.
      affinity_scale, popularity_exponent: tau and a (higher tau: more personal, more
        predictable; higher a: popularity explains more).
      user_features: "history" (from each user's training items) or "oracle" (from the
        planted user factors: a leak of the held-out interactions; module docstring, 6.).
      sampler: "exact" (module docstring, 3.) or "clustered" (3b., for large U x I).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler = {sampler!r}: expected one of {SAMPLERS}")
    if user_features not in USER_FEATURES:
        raise ValueError(f"user_features = {user_features!r}: expected one of {USER_FEATURES}")
    missing = sorted(set(feature_dims) - set(signal))
    if missing:
        raise ValueError(f"no signal given for modality '{missing[0]}': expected a value in "
                         "[0, 1] for each of feature_dims")
    planted = planted_structure(n_users, n_items, seed, affinity_scale=affinity_scale,
                                popularity_exponent=popularity_exponent)
    counts = _interactions_per_user(n_users, n_items, n_interactions, seed)
    draw = _draw_interactions if sampler == "exact" else _draw_interactions_clustered
    pairs = draw(planted, counts, seed)
    train, valid, test = split_per_user(pairs, n_users, seed)
    item_features = {m: make_features(planted.item_factors, dim, float(signal[m]), m,
                                      _rng(seed, f"item_features/{m}"))
                     for m, dim in feature_dims.items()}
    ds = Dataset(name=name, n_users=n_users, n_items=n_items, train=train, valid=valid,
                 test=test, item_features=item_features, source=f"synthetic:{name}")
    if not user_feature_dim:
        return ds
    s = float(signal.get("user_text", signal.get("text", 1.0)))
    profiles = user_text_features(ds, planted, user_feature_dim, s, seed, user_features)
    return dataclasses.replace(ds, user_features={"text": profiles})


def preset_signal(preset: str, feature_signal: float | None = None,
                  text_signal: float | None = None) -> dict[str, float]:
    """The preset's ``{modality: s}``, with overrides: `feature_signal` for every modality,
    then `text_signal` for text (and the user text profiles). None or < 0: keep the default."""
    spec = _preset(preset)
    signal = {m: spec.signal[m] for m in spec.feature_dims}
    if feature_signal is not None and feature_signal >= 0:
        signal = {m: float(feature_signal) for m in signal}
    if text_signal is not None and text_signal >= 0:
        signal["text"] = float(text_signal)
    return signal


def _preset(preset: str) -> Preset:
    if preset not in PRESETS:
        raise ValueError(f"unknown synthetic preset '{preset}': expected one of {list(PRESETS)}")
    return PRESETS[preset]


def generate(preset: str, seed: int = 2025, feature_signal: float | None = None,
             text_signal: float | None = None, user_features: str = "history") -> Dataset:
    """The synthetic dataset of a preset (`PRESETS`), e.g. ``generate("small")``.

    Args:
      preset: tiny | small | longtail | baby | sports | electronics | tiktok | xl.
      seed: generation seed (factors, interactions, split, features).
      feature_signal: informativeness of every modality in [0, 1]; None or < 0: the preset's.
      text_signal: informativeness of the text modality (item and user); None or < 0: as above.
      user_features: "history" or "oracle" (a leak, see the module docstring, 6.).
    """
    spec = _preset(preset)
    return make_synthetic(spec.n_users, spec.n_items, spec.n_interactions, spec.feature_dims,
                          preset_signal(preset, feature_signal, text_signal),
                          spec.user_feature_dim, seed, preset, user_features=user_features,
                          sampler=spec.sampler)
