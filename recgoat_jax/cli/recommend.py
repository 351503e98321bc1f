"""`recgoat-jax recommend`: the top-K items of given users from a run's best parameters,
the user's training items excluded."""

from __future__ import annotations

import json
import sys

import numpy as np

from recgoat_jax.cli.common import CliError, add_config_and_data_args
from recgoat_jax.cli.run_files import trainer_and_params


def add_parser(sub) -> None:
    p = sub.add_parser("recommend", help="top-K items for some users (training items excluded)")
    p.add_argument("--run", metavar="RUN_DIR", help="a train run's --out folder (its best/)")
    p.add_argument("--params", help=".npz of parameters, with the model's --config")
    p.add_argument("--users", required=True, metavar="ID,ID,...",
                   help="user ids as in the data files (dense ids for synthetic presets)")
    p.add_argument("--k", type=int, default=20, help="items per user (default 20)")
    p.add_argument("--format", choices=["json", "tsv"], default="json",
                   help="json: one object per user; tsv: user, rank, item, score per line")
    add_config_and_data_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.k < 1:
        raise CliError(f"--k {args.k}: expected >= 1")
    tokens = [t.strip() for t in args.users.split(",") if t.strip()]
    if not tokens:
        raise CliError("--users is empty: expected ids separated by commas, e.g. 1,2,3")
    trainer, params = trainer_and_params(args)
    ds = trainer.dataset
    users = [_dense_user(t, ds) for t in tokens]
    z_user, z_item = (np.asarray(z, np.float32) for z in trainer.embed(params))
    items, scores = top_k_unseen(z_user[users], z_item, users, ds.train, min(args.k, ds.n_items))
    item_label = (lambda i: str(ds.raw_item_ids[i])) if ds.raw_item_ids is not None else int
    rows = [{"user": t, "items": [item_label(i) for i in it if i >= 0],
             "scores": [float(s) for i, s in zip(it, sc) if i >= 0]}
            for t, it, sc in zip(tokens, items, scores)]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        out = sys.stdout
        out.write("user\trank\titem\tscore\n")
        for row in rows:
            for rank, (item, score) in enumerate(zip(row["items"], row["scores"]), 1):
                out.write(f"{row['user']}\t{rank}\t{item}\t{score:.6g}\n")
    return 0


def top_k_unseen(z_users: np.ndarray, z_item: np.ndarray, users: list[int], train: np.ndarray,
                 k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-`k` items by dot product for each of `users` (z_users: [n, d], z_item: [I, d]),
    each user's training items excluded. Returns (items [n, k] int, scores [n, k]); a user
    with fewer than k unseen items gets -1 / -inf in the tail."""
    scores = z_users @ z_item.T
    for row, user in enumerate(users):
        scores[row, train[train[:, 0] == user, 1]] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(scores, order, axis=1)
    return np.where(np.isfinite(top), order, -1), top


def _dense_user(token: str, ds) -> int:
    if ds.raw_user_ids is not None:
        matches = np.flatnonzero(ds.raw_user_ids.astype(str) == token)
        if not len(matches):
            raise CliError(f"--users: user '{token}' is not in {ds.source or ds.name}")
        return int(matches[0])
    try:
        user = int(token)
    except ValueError:
        raise CliError(f"--users: '{token}' is not a user id (integers 0..{ds.n_users - 1})") \
            from None
    if not 0 <= user < ds.n_users:
        raise CliError(f"--users: user {user} is out of range 0..{ds.n_users - 1}")
    return user
