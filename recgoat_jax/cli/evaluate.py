"""`recgoat-jax evaluate`: full-ranking metrics of a run's best parameters or of a .npz."""

from __future__ import annotations

from recgoat_jax.cli.common import add_config_and_data_args, print_json
from recgoat_jax.cli.run_files import trainer_and_params


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="valid / test metrics of a run's best parameters "
                                        "(--run) or of given parameters (--params)")
    p.add_argument("--run", metavar="RUN_DIR", help="a train run's --out folder")
    p.add_argument("--params", help=".npz of parameters (best/params.npz, or `recgoat-jax "
                                    "convert --to jax`), with the model's --config")
    add_config_and_data_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    trainer, params = trainer_and_params(args)
    print_json(trainer.evaluate(params))
    return 0
