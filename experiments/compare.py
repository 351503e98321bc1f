"""Train several configs on one dataset over several seeds; write a mean/std table.

    python experiments/compare.py --name synthetic_informative \
        --run lightgcn=experiments/configs/lightgcn.toml \
        --run recgoat=experiments/configs/recgoat.toml \
        --seeds 0 1 2 --set data.preset=small

Each --run is LABEL=CONFIG[;override;override...]. Results: experiments/results/<name>.{json,md}
(the JSON keeps every run's result.json content), plus each run's folder under --runs-dir.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from recgoat_jax import config as config_lib
from recgoat_jax.data.load import load_dataset
from recgoat_jax.io_utils import atomic_write_json, atomic_write_text
from recgoat_jax.train.loop import train

METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")


def parse_run(text: str) -> tuple[str, str, list[str]]:
    label, _, rest = text.partition("=")
    path, *overrides = rest.split(";")
    return label, path, overrides


def summarise(results: dict[str, list[dict]]) -> list[dict]:
    rows = []
    for label, runs in results.items():
        row = {"model": label, "seeds": len(runs),
               "epoch_seconds": statistics.median(r["epoch_seconds_median"] for r in runs),
               "best_epoch": [r["best_epoch"] for r in runs]}
        for m in METRICS:
            values = [r["test"][m] for r in runs]
            row[m] = (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
        rows.append(row)
    return rows


def markdown(rows: list[dict], title: str, command: str) -> str:
    head = ("| model | seeds | " + " | ".join(f"test {m}" for m in METRICS)
            + " | best epochs | s/epoch |")
    lines = [f"### {title}", "", f"Command: `{command}`", "", head,
             "|" + "---|" * (len(METRICS) + 4)]
    for r in rows:
        cells = " | ".join(f"{r[m][0]:.4f} ± {r[m][1]:.4f}" for m in METRICS)
        lines.append(f"| {r['model']} | {r['seeds']} | {cells} | {r['best_epoch']} | "
                     f"{r['epoch_seconds']:.2f} |")
    lines.append("")
    lines.append("Mean ± sample std over the seeds that finished (std 0 with one seed); test "
                 "metrics at the best-valid epoch (MMRec protocol).")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True)
    p.add_argument("--run", action="append", required=True, help="LABEL=CONFIG[;key=value...]")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--set", action="append", default=[], help="override for every run")
    p.add_argument("--runs-dir", default="runs/compare")
    p.add_argument("--results-dir", default="experiments/results")
    p.add_argument("--summarise-only", action="store_true",
                   help="train nothing: tabulate the result.json files already in --runs-dir")
    args = p.parse_args(argv)
    import sys
    command = "python " + " ".join(sys.argv)

    results: dict[str, list[dict]] = {}
    datasets = {}
    for label, path, overrides in map(parse_run, args.run):
        for seed in args.seeds:
            if args.summarise_only:
                done = Path(args.runs_dir) / args.name / f"{label}-seed{seed}" / "result.json"
                if done.exists():
                    results.setdefault(label, []).append(json.loads(done.read_text()))
                continue
            cfg = config_lib.load(path, args.set + overrides + [f"train.seed={seed}"])
            key = config_lib.dumps(config_lib.from_dict({"data": config_lib.to_dict(cfg)["data"]}))
            if key not in datasets:
                datasets[key] = load_dataset(cfg.data)
            out = Path(args.runs_dir) / args.name / f"{label}-seed{seed}"
            result = train(cfg, datasets[key], out, progress=False)
            print(json.dumps({"model": label, "seed": seed, "best_epoch": result["best_epoch"],
                              **{m: round(result["test"][m], 4) for m in METRICS}}), flush=True)
            results.setdefault(label, []).append(result)
    rows = summarise(results)
    out_dir = Path(args.results_dir)
    atomic_write_json(out_dir / f"{args.name}.json", {"command": command, "rows": rows,
                                                       "runs": results})
    atomic_write_text(out_dir / f"{args.name}.md", markdown(rows, args.name, command))
    print(markdown(rows, args.name, command))


if __name__ == "__main__":
    main()
