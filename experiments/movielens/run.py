"""MovieLens-100K end to end: RecBole atomic files -> MiniLM features -> 6 models x seeds.

    pip download --no-deps recbole==1.2.1 -d /tmp/recbole_wheel
    python experiments/movielens/run.py /tmp/recbole_wheel/recbole-1.2.1-py3-none-any.whl \
        --work-dir /tmp/ml100k_work

SOURCE is the RecBole wheel (its ``recbole/dataset_example/ml-100k/``) or a folder holding
``ml-100k.inter`` and ``ml-100k.item``. Nothing is written into the repository except the
result table: the data, the features and the run folders live under ``--work-dir``.

Steps:
1. copy ``ml-100k.inter`` / ``ml-100k.item`` into ``WORK/ml-100k/``;
2. read them with the project's RecBole reader (dense ids, MMRec's per-user split with
   ``data.seed``), item text = ``"Title (year): Genre, Genre"``;
3. MiniLM (all-MiniLM-L6-v2) item features -> ``WORK/ml-100k/text_feat.npy`` ``[I, 384]``;
4. template user profiles (``TemplateBackend``) from each user's TRAINING items only ->
   ``WORK/ml-100k/profiles_answers.jsonl`` -> MiniLM -> ``user_text_feat.npy`` ``[U, 384]``;
5. train every variant for every seed (same split, same training settings), appending each
   finished run to ``results/ml100k.{json,md}`` so that an interrupted run keeps what finished
   (``--resume`` skips the (variant, seed) pairs already there).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shlex
import shutil
import sys
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

# Run from a checkout without `pip install -e .`: the repository root holds the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from recgoat_jax import config as config_lib  # noqa: E402 (after the path set-up)
from recgoat_jax.data.dataset import DataError, Dataset  # noqa: E402
from recgoat_jax.data.load import load_dataset  # noqa: E402
from recgoat_jax.data.readers import read_recbole, read_recbole_items  # noqa: E402
from recgoat_jax.features import llm_backends, profiles  # noqa: E402
from recgoat_jax.io_utils import atomic_write_json, atomic_write_text, save_npy_atomic  # noqa: E402

HERE = Path(__file__).resolve().parent
CONFIGS = HERE.parent / "configs"
NAME = "ml-100k"
ATOMIC_FILES = (f"{NAME}.inter", f"{NAME}.item")
WHEEL_FOLDER = f"recbole/dataset_example/{NAME}/"
DATA_SEED = 2025  # the split; the same for every run (the seeds vary the training only)

# label, config file, per-variant overrides (on top of the shared TRAIN_SETTINGS)
VARIANTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("popularity", "popularity.toml", ()),
    ("mf", "mf.toml", ()),
    ("lightgcn", "lightgcn.toml", ()),
    ("recgoat (default)", "recgoat.toml", ()),
    # the default without the paper's user side: ML-100K's template profiles cost it accuracy
    ("recgoat-no-user-side", "recgoat.toml", ("model.user_side=false",)),
    ("recgoat-reference", "recgoat-reference.toml", ()),
    ("recgoat-paper", "recgoat-paper.toml", ()),
)

# Shared by every trainable model, so that the comparison is one of models, not of budgets.
TRAIN_SETTINGS = (
    "train.epochs=20",
    "train.batch_size=2048",
    "train.lr=5e-3",
    "loss.infonce_block=512",
    "eval.every=5",
    "eval.patience=3",
)

Encoder = Callable[[Sequence[str | None], str], np.ndarray]


# ----------------------------------------------------------------------------- data

def copy_atomic_files(source: str | Path, data_dir: Path) -> Path:
    """Put ``ml-100k.inter`` and ``ml-100k.item`` into `data_dir` (created).

    Args:
      source: the RecBole wheel (a zip holding ``recbole/dataset_example/ml-100k/``) or a
        folder holding the two files.
    Returns:
      `data_dir`.
    """
    source = Path(source)
    data_dir.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        for fname in ATOMIC_FILES:
            if not (source / fname).is_file():
                raise DataError(f"{source}: no {fname}: expected the extracted RecBole "
                                f"'{NAME}' folder (with {', '.join(ATOMIC_FILES)})")
            shutil.copyfile(source / fname, data_dir / fname)
        return data_dir
    if not zipfile.is_zipfile(source):
        raise DataError(f"{source}: neither a folder nor a wheel/zip file: expected the "
                        "recbole-1.2.1 wheel or the extracted ml-100k folder")
    with zipfile.ZipFile(source) as wheel:
        names = set(wheel.namelist())
        for fname in ATOMIC_FILES:
            member = WHEEL_FOLDER + fname
            if member not in names:
                raise DataError(f"{source}: no {member} inside: expected the recbole==1.2.1 "
                                "wheel (pip download --no-deps recbole==1.2.1)")
            with wheel.open(member) as src, open(data_dir / fname, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return data_dir


def movie_text(fields: dict[str, str]) -> str:
    """``"Toy Story (1995): Animation, Children's, Comedy"`` from one ``.item`` row.

    A year that is not a number (ML-100K's placeholder item 267 has ``unkonwn``) is left out.
    """
    title = fields.get("movie_title", "").strip()
    year = fields.get("release_year", "").strip()
    genres = ", ".join(fields.get("class", "").split())
    head = f"{title} ({year})" if re.fullmatch(r"\d{4}", year) else title
    return f"{head}: {genres}" if genres else head


def item_texts(data_dir: Path, ds: Dataset) -> list[str | None]:
    """``[I]`` text of each dense item id (``None`` for an item the ``.item`` file lacks)."""
    rows = read_recbole_items(data_dir, NAME, ds)
    return [movie_text(rows[i]) if i in rows else None for i in range(ds.n_items)]


def profile_texts(ds: Dataset, texts: Sequence[str | None], answers_path: Path
                  ) -> list[str | None]:
    """``[U]`` template profile of each user, built from the user's training items only.

    The answers are written to `answers_path` (the JSONL an LLM backend would write) and read
    back with `profiles.parse_answers`, so this is the pipeline of ``recgoat-jax profiles``
    with the offline `TemplateBackend` in place of an LLM.
    """
    requests, _ = profiles.profile_requests(ds, texts)
    answers_path.unlink(missing_ok=True)  # profiles of an earlier split must not be kept
    report = llm_backends.generate_answers(requests, llm_backends.TemplateBackend(),
                                           answers_path, workers=1, progress=False)
    if report.failed:
        raise DataError(f"{answers_path}: template profiles failed for {report.failed}")
    return profiles.parse_answers(answers_path, ds).texts


def minilm_encoder(batch_size: int = 64) -> Encoder:
    """Encode with the bundled all-MiniLM-L6-v2 (CPU); rows without text get the mean row."""
    from recgoat_jax.features import encode

    model = encode.load_encoder(device="cpu")

    def run(texts: Sequence[str | None], what: str) -> np.ndarray:
        return encode.encode_aligned(model, texts, missing="mean", what=what,
                                     batch_size=batch_size, progress=False)
    return run


def prepare(source: str | Path, work_dir: Path, data_seed: int = DATA_SEED,
            encoder: Encoder | None = None) -> Path:
    """Steps 1-4: the data folder with ``text_feat.npy`` and ``user_text_feat.npy``.

    Args:
      source: wheel or folder (`copy_atomic_files`).
      work_dir: outside the repository; the data goes to ``work_dir / "ml-100k"``.
      data_seed: seed of the per-user split (must equal the runs' ``data.seed``).
      encoder: ``(texts, what) -> [N, dim]``; default MiniLM.
    Returns:
      the data folder, ready for ``data.format="recbole"``.
    """
    data_dir = copy_atomic_files(source, Path(work_dir) / NAME)
    for stale in data_dir.glob("*_feat.npy"):
        stale.unlink()  # the reader checks feature rows against the ids, so start clean
    ds = read_recbole(data_dir, NAME, seed=data_seed)
    texts = item_texts(data_dir, ds)
    user_texts = profile_texts(ds, texts, data_dir / "profiles_answers.jsonl")
    encoder = encoder or minilm_encoder()
    item_feat = encoder(texts, "items")
    user_feat = encoder(user_texts, "users")
    save_npy_atomic(data_dir / "text_feat.npy", np.asarray(item_feat, np.float32))
    save_npy_atomic(data_dir / "user_text_feat.npy", np.asarray(user_feat, np.float32))
    atomic_write_json(data_dir / "prepare.json", {
        "source": str(source), "data_seed": data_seed, "n_users": ds.n_users,
        "n_items": ds.n_items, "train": len(ds.train), "valid": len(ds.valid),
        "test": len(ds.test), "item_text_example": texts[0],
        "profile_example": user_texts[0]})
    return data_dir


# ----------------------------------------------------------------------------- runs

def _compare_module():
    """``experiments/compare.py`` (not a package), for its table code."""
    spec = importlib.util.spec_from_file_location("compare", HERE.parent / "compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_results(path_stem: Path, runs: dict[str, list[dict]], planned: list[str],
                  header: dict, compare) -> None:
    """Write ``<stem>.json`` (every run) and ``<stem>.md`` (mean ± std) from what finished."""
    order = [label for label, _, _ in VARIANTS if runs.get(label)]
    rows = compare.summarise({label: runs[label] for label in order})
    done = {f"{label}/seed{r['seed']}" for label in order for r in runs[label]}
    missing = [p for p in planned if p not in done]
    atomic_write_json(path_stem.with_suffix(".json"),
                      {**header, "rows": rows, "runs": runs, "not_finished": missing})
    table = compare.markdown(rows, "MovieLens-100K", header["command"])
    notes = [f"Shared settings: `{' '.join(header['shared_settings'])}`; split `data.seed="
             f"{header['data_seed']}` for every run, seeds {header['seeds']} vary the training.",
             f"Data: {header['data']}."]
    if missing:
        notes.append(f"Not finished: {', '.join(missing)}.")
    chosen = {p.rsplit("/", 1)[0] for p in planned}
    not_run = [label for label, _, _ in VARIANTS if label not in chosen and not runs.get(label)]
    if not_run:
        notes.append(f"Not run (left out with --only): {', '.join(not_run)}; see the README.")
    atomic_write_text(path_stem.with_suffix(".md"), table + "\n" + "\n\n".join(notes) + "\n")


def run_all(data_dir: Path, work_dir: Path, seeds: Sequence[int], labels: Sequence[str],
            results_stem: Path, extra: Sequence[str], resume: bool, command: str) -> None:
    """Step 5: train `labels` x `seeds`, rewriting the results after every run."""
    from recgoat_jax.train.loop import train

    compare = _compare_module()
    shared = list(TRAIN_SETTINGS) + list(extra)
    data_set = ['data.format="recbole"', f'data.path="{data_dir}"', f'data.name="{NAME}"',
                f"data.seed={DATA_SEED}"]
    prep = json.loads((data_dir / "prepare.json").read_text())
    header = {"command": command, "shared_settings": shared, "data_seed": DATA_SEED,
              "seeds": list(seeds),
              "data": (f"{prep['n_users']} users, {prep['n_items']} items, {prep['train']} / "
                       f"{prep['valid']} / {prep['test']} train / valid / test pairs; item "
                       f"text e.g. '{prep['item_text_example']}'")}
    runs: dict[str, list[dict]] = {}
    if resume and results_stem.with_suffix(".json").is_file():
        old = json.loads(results_stem.with_suffix(".json").read_text())
        if old.get("shared_settings") == shared and old.get("data_seed") == DATA_SEED:
            # Every finished variant stays in the table, also those not selected this time.
            runs = {label: [r for r in rs if r["seed"] in seeds]
                    for label, rs in old["runs"].items()}
    variants = [v for v in VARIANTS if v[0] in labels]
    planned = [f"{label}/seed{s}" for label, _, _ in variants for s in seeds]
    datasets: dict[str, Dataset] = {}
    for label, config_file, overrides in variants:
        for seed in seeds:
            if any(r["seed"] == seed for r in runs.get(label, [])):
                continue
            cfg = config_lib.load(CONFIGS / config_file,
                                  data_set + shared + list(overrides) + [f"train.seed={seed}"])
            key = config_lib.dumps(config_lib.from_dict({"data": config_lib.to_dict(cfg)["data"]}))
            if key not in datasets:
                datasets[key] = load_dataset(cfg.data)
            out = work_dir / "runs" / f"{label.split()[0]}-seed{seed}"
            result = {**train(cfg, datasets[key], out, progress=False), "seed": seed}
            runs.setdefault(label, []).append(result)
            print(json.dumps({"model": label, "seed": seed, "best_epoch": result["best_epoch"],
                              "epochs_run": result["epochs_run"],
                              "s_per_epoch": round(result["epoch_seconds_median"], 2),
                              **{m: round(result["test"][m], 4) for m in compare.METRICS}}),
                  flush=True)
            write_results(results_stem, runs, planned, header, compare)
    write_results(results_stem, runs, planned, header, compare)
    print(results_stem.with_suffix(".md").read_text())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="recbole-1.2.1 wheel, or a folder with ml-100k.inter/.item")
    p.add_argument("--work-dir", default="/tmp/ml100k_work",
                   help="data, features and run folders (keep it outside the repository)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--only", nargs="+", choices=[v[0] for v in VARIANTS],
                   default=[v[0] for v in VARIANTS], help="variants to run (default: all)")
    p.add_argument("--set", action="append", default=[],
                   help="extra override for every run, after the shared settings")
    p.add_argument("--skip-prepare", action="store_true",
                   help="reuse WORK/ml-100k from an earlier run (same split seed)")
    p.add_argument("--prepare-only", action="store_true")
    p.add_argument("--resume", action="store_true",
                   help="keep the finished (variant, seed) runs of the results JSON (all "
                       "variants, also those left out with --only) when the shared settings "
                       "are the same; train only the missing ones")
    p.add_argument("--results", default=str(HERE / "results" / "ml100k"),
                   help="results path without suffix (.json and .md are written)")
    args = p.parse_args(argv)
    work_dir = Path(args.work_dir).absolute()
    data_dir = work_dir / NAME
    if not args.skip_prepare:
        prepare(args.source, work_dir)
        print(json.loads((data_dir / "prepare.json").read_text()), flush=True)
    if args.prepare_only:
        return
    command = "python " + shlex.join(sys.argv if argv is None else [__file__, *argv])
    run_all(data_dir, work_dir, args.seeds, args.only, Path(args.results), args.set,
            args.resume, command)


if __name__ == "__main__":
    main()
