"""`recgoat-jax` command line: train, evaluate, data stats, encode, profiles, convert."""

from __future__ import annotations

import argparse
import json
import sys

from recgoat_jax import config as config_lib


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="synthetic preset: tiny, small, baby, sports, electronics, tiktok")
    p.add_argument("--data-format", choices=["mmrec", "lightgcn", "recbole"])
    p.add_argument("--data-path", help="folder with the dataset's files")
    p.add_argument("--data-name", help="dataset name inside the folder (<name>.inter)")


def _data_overrides(args) -> list[str]:
    sets = []
    if args.preset:
        sets += [f'data.preset="{args.preset}"', 'data.format=""']
    if args.data_format:
        sets.append(f'data.format="{args.data_format}"')
    if args.data_path:
        sets.append(f"data.path={json.dumps(args.data_path)}")
    if getattr(args, "data_name", None):
        sets.append(f"data.name={json.dumps(args.data_name)}")
    return sets


def _resolve(args) -> config_lib.RunConfig:
    return config_lib.load(getattr(args, "config", None), _data_overrides(args) + list(args.set or []))


def cmd_train(args) -> int:
    from recgoat_jax.data.load import load_dataset
    from recgoat_jax.train.checkpoint import CheckpointError
    from recgoat_jax.train.loop import train

    cfg = _resolve(args)
    dataset = load_dataset(cfg.data)
    try:
        result = train(cfg, dataset, args.out, progress=not args.quiet, resume=args.resume)
    except CheckpointError as e:  # --resume refused: nothing was written
        print(f"recgoat-jax: error: {e}", file=sys.stderr)
        return 2
    keys = ["recall@20", "ndcg@20"]
    print(json.dumps({"model": result["model"], "dataset": result["dataset"],
                      "best_epoch": result["best_epoch"],
                      **{f"test/{k}": result["test"].get(k) for k in keys},
                      "epoch_seconds_median": round(result["epoch_seconds_median"], 3)}))
    return 0


def cmd_evaluate(args) -> int:
    """Rank with given parameters (e.g. converted from the public PyTorch code) on valid / test."""
    import jax
    import numpy as np

    from recgoat_jax.convert import unflatten
    from recgoat_jax.data.load import load_dataset
    from recgoat_jax.train.loop import Trainer

    cfg = _resolve(args)
    trainer = Trainer(cfg, load_dataset(cfg.data))
    with np.load(args.params) as f:
        loaded = unflatten({k: f[k] for k in f.files})
    expected = jax.eval_shape(trainer.model.init, jax.random.PRNGKey(0))
    got = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), loaded)
    if jax.tree.structure(got) != jax.tree.structure(expected) or any(
            a.shape != b.shape for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected))):
        raise config_lib.ConfigError(
            f"{args.params}: parameters do not fit model '{cfg.model.name}' on this dataset "
            f"(expected {jax.tree.map(lambda a: a.shape, expected)})")
    print(json.dumps(trainer.evaluate(jax.tree.map(jax.numpy.asarray, loaded)), indent=2))
    return 0


def cmd_data_stats(args) -> int:
    from recgoat_jax.data.load import load_dataset

    cfg = config_lib.load(None, _data_overrides(args))
    stats = load_dataset(cfg.data).stats()
    width = max(len(k) for k in stats)
    for k, v in stats.items():
        if k == "sparsity":
            v = f"{v:.6f}"
        print(f"{k:<{width}}  {v}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recgoat-jax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model and write config.toml, metrics.jsonl, result.json")
    p.add_argument("--config", help="TOML config (experiments/configs/*.toml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=10 (repeatable)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its newest checkpoint (the config may "
                        "change only train.epochs, n_devices, checkpoint_every, max_to_keep)")
    _add_data_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate given parameters (.npz, e.g. from `convert`)")
    p.add_argument("--config", help="TOML config of the model the parameters belong to")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--params", required=True, help=".npz of parameters (recgoat-jax convert --to jax)")
    _add_data_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("data", help="dataset utilities")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    s = data_sub.add_parser("stats", help="users, items, interactions per split, sparsity, features")
    _add_data_args(s)
    s.set_defaults(func=cmd_data_stats)

    for extension in ("recgoat_jax.features.cli", "recgoat_jax.convert"):
        try:
            module = __import__(extension, fromlist=["add_cli"])
        except ImportError:
            continue
        module.add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from recgoat_jax.data import DataError
    from recgoat_jax.train.guard import TrainingDiverged

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (config_lib.ConfigError, DataError, FileNotFoundError, TrainingDiverged) as e:
        print(f"recgoat-jax: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
