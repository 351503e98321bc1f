"""`recgoat-jax data stats`: users, items, interactions per split, sparsity, features."""

from __future__ import annotations

from recgoat_jax import config as config_lib
from recgoat_jax.cli.common import add_data_args, data_overrides


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="dataset utilities")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    s = data_sub.add_parser("stats", help="users, items, interactions per split, sparsity, "
                                          "features")
    add_data_args(s)
    s.set_defaults(func=stats)


def stats(args) -> int:
    from recgoat_jax.data.load import load_dataset, resolve_data

    cfg = resolve_data(config_lib.load(None, data_overrides(args)))
    table = load_dataset(cfg.data).stats()
    width = max(len(k) for k in table)
    for k, v in table.items():
        if k == "sparsity":
            v = f"{v:.6f}"
        print(f"{k:<{width}}  {v}")
    return 0
