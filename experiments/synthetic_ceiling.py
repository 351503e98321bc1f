"""How much a synthetic preset's features and interactions could tell a perfect model.

    python experiments/synthetic_ceiling.py --preset small [--user-features history|oracle]

Prints (1) the test metrics of the planted model's own affinity logits (`Planted.logits`: the
scores the interactions were drawn from), ranked by the very evaluator the trainer builds for
its models (`recgoat_jax.train.loop.make_evaluator`: MMRec protocol, only the training items
masked): a ceiling no learned model should pass; and (2) for each item and user modality, the
held-out R^2 of a linear probe from the features to the planted factors
(`synthetic.probe_r2`): how much of the hidden taste each modality carries. For the user
features it also prints the probe R^2 of the training-history factors (each user's mean
planted item factor over their training items): about what a profile summarising the training
items can carry; user features well above it leak the held-out interactions (the "oracle"
kind does: 0.95 against 0.74 on `small`).
"""

from __future__ import annotations

import argparse

import jax.numpy as jnp
import numpy as np

from recgoat_jax.config import EvalConfig
from recgoat_jax.data.synthetic import (USER_FEATURES, generate, history_factors,
                                        planted_structure, probe_r2)
from recgoat_jax.eval.ranking import RankingEvaluator
from recgoat_jax.train.loop import make_evaluator


def ceiling_evaluator(ds, ks=(10, 20)) -> RankingEvaluator:
    """The test evaluator of the models (`make_evaluator`), so the ceiling masks exactly what
    their rankings mask."""
    return make_evaluator(ds, "test", EvalConfig(ks=tuple(ks)), mesh=None)


def planted_embeddings(planted, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """(z_user [U, k + 1], z_item [I, k + 1]) whose dot products are `Planted.logits`:
    <P_u tau / sqrt(k), Q_i> + log_pop_i = <[P_u tau / sqrt(k), 1], [Q_i, log_pop_i]>."""
    k = planted.user_factors.shape[1]
    z_user = np.concatenate([planted.user_factors * (planted.affinity_scale / np.sqrt(k)),
                             np.ones((n_users, 1), np.float32)], 1)
    z_item = np.concatenate([planted.item_factors, planted.item_log_popularity[:, None]], 1)
    return z_user, z_item


def user_probe_lines(ds, planted) -> list[str]:
    """Probe R^2 of each user feature table and of the training-history factors, against the
    planted user factors (which drew every split, held-out ones included)."""
    history, has = history_factors(ds.train, planted.item_factors, ds.n_users)
    lines = [f"user training-history factors [{ds.n_users}, {history.shape[1]}] (mean planted "
             f"item factor of each user's training items; {int((~has).sum())} users without "
             f"any): probe R^2 {probe_r2(history, planted.user_factors):.4f}, what a profile "
             "summarising the training items can carry (user features well above it leak)"]
    for name, x in sorted(ds.user_features.items()):
        lines.append(f"user {name} [{x.shape[0]}, {x.shape[1]}]: held-out probe R^2 of the "
                     f"planted user factors {probe_r2(x, planted.user_factors):.4f}, of the "
                     f"training-history factors {probe_r2(x, history):.4f}")
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small")
    p.add_argument("--seed", type=int, default=2025, help="data.seed of the preset")
    p.add_argument("--user-features", default="history", choices=USER_FEATURES,
                   help="data.user_features: history (default) or oracle (leaks held-out data)")
    args = p.parse_args(argv)
    ds = generate(args.preset, seed=args.seed, user_features=args.user_features)
    planted = planted_structure(ds.n_users, ds.n_items, args.seed)
    z_user, z_item = planted_embeddings(planted, ds.n_users)
    metrics = ceiling_evaluator(ds)(jnp.asarray(z_user), jnp.asarray(z_item))
    print("planted logits on test (training items masked, as for the models): "
          + ", ".join(f"{m} {v:.4f}" for m, v in sorted(metrics.items())
                      if m.startswith(("recall", "ndcg"))))
    for name, x in sorted(ds.item_features.items()):
        print(f"item {name} [{x.shape[0]}, {x.shape[1]}]: held-out probe R^2 of the "
              f"planted factors {probe_r2(x, planted.item_factors):.4f}")
    if ds.user_features:
        print(f"user features: {args.user_features}")
        for line in user_probe_lines(ds, planted):
            print(line)


if __name__ == "__main__":
    main()
