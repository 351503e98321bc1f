"""MMRec's per-user train / valid / test split, deterministic given a seed.

Each user's interactions are put in a random order (MMRec's preprocessed Amazon data is a random
8:1:1 split per user, not a chronological one, so timestamps are not used). Then, for a user with
``n`` interactions:

* ``n >= 10``: ``round(n / 10)`` valid, ``round(n / 10)`` test, the rest (about 80%) train;
* ``3 <= n < 10``: exactly one valid and one test interaction, the rest train;
* ``n < 3``: everything train.

(Halves round up; ``n`` in 10..14 therefore gives one valid and one test item, as below 10.)
"""

from __future__ import annotations

import numpy as np

MIN_INTERACTIONS_FOR_EVAL = 3  # below this a user keeps every interaction for training
MIN_INTERACTIONS_FOR_RATIO = 10  # from here on valid / test are 10% each


def eval_counts(n_per_user: np.ndarray) -> np.ndarray:
    """How many valid (== how many test) interactions each user gets.

    Args:
      n_per_user: ``[U]`` int, interactions per user.
    Returns:
      ``[U]`` int64: 0 below 3 interactions, 1 below 10, ``round(n / 10)`` from 10 on.
    """
    n = np.asarray(n_per_user, dtype=np.int64)
    tenth = (n + 5) // 10  # round(n / 10) with halves up (numpy's round is half-to-even)
    return np.where(n < MIN_INTERACTIONS_FOR_EVAL, 0,
                    np.where(n < MIN_INTERACTIONS_FOR_RATIO, 1, tenth))


def split_per_user(pairs: np.ndarray, n_users: int, seed: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split unique (user, item) pairs per user into train / valid / test.

    Args:
      pairs: ``[N, 2]`` int (user, item), unique, users in ``0..n_users-1``.
      n_users: U.
      seed: the split depends only on ``seed`` and the set of pairs (not on their order).
    Returns:
      ``(train, valid, test)``, each ``[N_split, 2]`` int32, sorted by (user, item).
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    # Canonical order first, so the result does not depend on the order pairs arrive in.
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    shuffle_key = np.random.default_rng(seed).random(len(pairs))
    order = np.lexsort((shuffle_key, pairs[:, 0]))  # by user, random within a user
    users = pairs[order, 0]
    n_per_user = np.bincount(users, minlength=n_users)
    first_of_user = np.concatenate([[0], np.cumsum(n_per_user)[:-1]])
    rank = np.arange(len(users)) - first_of_user[users]  # position in the user's random order
    n_eval = eval_counts(n_per_user)[users]
    is_test = rank < n_eval
    is_valid = ~is_test & (rank < 2 * n_eval)
    is_train = ~is_test & ~is_valid

    def take(mask: np.ndarray) -> np.ndarray:
        chosen = pairs[order[mask]]
        return chosen[np.lexsort((chosen[:, 1], chosen[:, 0]))].astype(np.int32)

    return take(is_train), take(is_valid), take(is_test)
