"""How much a synthetic preset's features and interactions could tell a perfect model.

    python experiments/synthetic_ceiling.py --preset small

Prints (1) the test metrics of the planted model's own affinity logits (`Planted.logits`: the
scores the interactions were drawn from), ranked like every model's embeddings (MMRec protocol,
training and validation items masked): a ceiling no learned model should pass; and (2) for each
item and user modality, the R^2 of a ridge read-out of the planted factors from the features
(in-sample): how much of the hidden taste each modality carries.
"""

from __future__ import annotations

import argparse

import jax.numpy as jnp
import numpy as np

from recgoat_jax.data.synthetic import generate, planted_structure
from recgoat_jax.eval.ranking import RankingEvaluator


def readout_r2(features: np.ndarray, factors: np.ndarray, ridge: float = 1e-3) -> float:
    """R^2 of the least-squares (ridge) map features [N, f] -> factors [N, k], with a bias."""
    x = np.concatenate([features, np.ones((len(features), 1), features.dtype)], 1)
    w = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ factors)
    residual = ((x @ w - factors) ** 2).sum()
    return float(1.0 - residual / ((factors - factors.mean(0)) ** 2).sum())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small")
    p.add_argument("--seed", type=int, default=2025, help="data.seed of the preset")
    args = p.parse_args(argv)
    ds = generate(args.preset, seed=args.seed)
    planted = planted_structure(ds.n_users, ds.n_items, args.seed)
    k = planted.user_factors.shape[1]
    # logits(u, i) = <P_u tau / sqrt(k), Q_i> + log_pop_i: a dot product of [P, 1], [Q, log_pop]
    z_user = np.concatenate([planted.user_factors * (planted.affinity_scale / np.sqrt(k)),
                             np.ones((ds.n_users, 1), np.float32)], 1)
    z_item = np.concatenate([planted.item_factors, planted.item_log_popularity[:, None]], 1)
    seen = np.concatenate([ds.train, ds.valid])
    metrics = RankingEvaluator(ds.n_users, ds.n_items, seen, ds.test, ks=(10, 20))(
        jnp.asarray(z_user), jnp.asarray(z_item))
    print("planted logits on test: " + ", ".join(f"{m} {v:.4f}" for m, v in sorted(metrics.items())
                                                   if m.startswith(("recall", "ndcg"))))
    for side, feats, factors in (("item", ds.item_features, planted.item_factors),
                                 ("user", ds.user_features, planted.user_factors)):
        for name, x in sorted(feats.items()):
            print(f"{side} {name} [{x.shape[0]}, {x.shape[1]}]: read-out R^2 of the planted "
                  f"factors {readout_r2(x.astype(np.float64), factors.astype(np.float64)):.4f}")


if __name__ == "__main__":
    main()
