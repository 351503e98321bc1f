"""How much a synthetic preset's features and interactions could tell a perfect model.

    python experiments/synthetic_ceiling.py --preset small

Prints (1) the test metrics of the planted model's own affinity logits (`Planted.logits`: the
scores the interactions were drawn from), ranked like every model's embeddings (MMRec protocol,
training and validation items masked): a ceiling no learned model should pass; and (2) for each
item and user modality, the held-out R^2 of a linear probe from the features to the planted
factors (`synthetic.probe_r2`): how much of the hidden taste each modality carries.
"""

from __future__ import annotations

import argparse

import jax.numpy as jnp
import numpy as np

from recgoat_jax.data.synthetic import generate, planted_structure, probe_r2
from recgoat_jax.eval.ranking import RankingEvaluator


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
            print(f"{side} {name} [{x.shape[0]}, {x.shape[1]}]: held-out probe R^2 of the "
                  f"planted factors {probe_r2(x, factors):.4f}")


if __name__ == "__main__":
    main()
