"""Reading what a run left behind: its config and best-valid parameters, or a params .npz."""

from __future__ import annotations

import zipfile
from pathlib import Path

import jax
import numpy as np

from recgoat_jax import config as config_lib
from recgoat_jax.cli.common import CliError
from recgoat_jax.tree_utils import unflatten


def run_config(run: str, overrides: list[str] = ()) -> config_lib.RunConfig:
    """The config.toml of run folder `run` (with `overrides`); CliError when it is no run."""
    folder = Path(run)
    if not folder.is_dir():
        raise CliError(f"--run {run}: not a folder (expected the --out folder of a train run)")
    if not (folder / "config.toml").is_file():
        raise CliError(f"--run {run}: no config.toml: not the --out folder of a train run")
    return config_lib.load(folder / "config.toml", overrides)


def best_params_path(run: str) -> Path:
    path = Path(run) / "best" / "params.npz"
    if not path.is_file():
        raise CliError(f"--run {run}: no best/params.npz (the run has not evaluated an epoch "
                       "yet, or was written by an older version)")
    return path


def read_params(path: str | Path, option: str = "--params") -> dict:
    """The parameter tree of a flattened .npz (`tree_utils.flatten` keys, as best/params.npz
    and `convert --to jax` write it); CliError naming the file otherwise."""
    path = Path(path)
    if path.is_dir():
        raise CliError(f"{option} {path}: is a folder; expected a .npz of parameters (a run's "
                       "best/params.npz, or `recgoat-jax convert --to jax`); for a run folder "
                       "use --run")
    try:
        with np.load(path, allow_pickle=False) as f:
            if not hasattr(f, "files"):
                raise ValueError("a single .npy array, not an .npz archive")
            return unflatten({k: f[k] for k in f.files})
    except FileNotFoundError:
        raise CliError(f"{option} {path}: file not found") from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise CliError(f"{option} {path}: not a .npz of parameters ({e})") from None


def fitted_params(loaded: dict, template, model_name: str, where: str):
    """`loaded` as device arrays when it has `template`'s tree and shapes (the model's
    parameters on this dataset); CliError otherwise."""
    got = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), loaded)
    if jax.tree.structure(got) != jax.tree.structure(template) or any(
            a.shape != b.shape for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(template))):
        shapes = jax.tree.map(lambda a: a.shape, template)
        raise CliError(f"{where}: parameters do not fit model '{model_name}' on this dataset "
                       f"(expected {shapes})")
    return jax.tree.map(jax.numpy.asarray, loaded)


def trainer_and_params(args):
    """(Trainer, params) for `evaluate` / `recommend`: from --run (its config and best/), or
    from --config/--set/data options and --params."""
    from recgoat_jax.cli.common import resolve
    from recgoat_jax.data.load import load_dataset, resolve_data
    from recgoat_jax.train.loop import Trainer

    if getattr(args, "run", None):
        if getattr(args, "params", None) or getattr(args, "config", None):
            raise CliError("--run reads the run's own config and best/params.npz: give "
                           "--run alone, or --config and --params")
        cfg = resolve_data(run_config(args.run, list(args.set or [])))
        path, option = best_params_path(args.run), "--run"
    else:
        if not getattr(args, "params", None):
            raise CliError("give --run RUN_DIR, or --params FILE.npz (with the --config of "
                           "the model)")
        cfg, path, option = resolve(args), args.params, "--params"
    loaded = read_params(path, option)  # a bad file stops before any data is read
    trainer = Trainer(cfg, load_dataset(cfg.data))
    template = jax.eval_shape(trainer.model.init, jax.random.PRNGKey(0))
    return trainer, fitted_params(loaded, template, cfg.model.name, f"{option} {path}")
