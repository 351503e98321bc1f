"""sweep.json and sweep.md: one row per configuration, mean ± std over its members (seeds and
data splits) of valid and test Recall / NDCG @ 10 / 20, the best epochs, and the configuration
that wins on valid (test numbers are reported, never used to choose)."""

from __future__ import annotations

import statistics

from recgoat_jax.sweep.spec import Member

REPORTED = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")


def summarise(members: list[Member], results: list[dict], selection_metric: str) -> dict:
    """The sweep.json content for `members` and their result dicts (same order)."""
    rows: dict[int, dict] = {}
    for member, result in zip(members, results):
        row = rows.setdefault(member.config_id, {"config_id": member.config_id,
                                                 "settings": list(member.settings),
                                                 "members": [], "best_epochs": [],
                                                 "diverged": 0,
                                                 "_valid": [], "_test": []})
        row["members"].append(member.name)
        row["best_epochs"].append(result["best_epoch"])
        row["diverged"] += bool(result.get("diverged"))
        row["_valid"].append(result["valid"])
        row["_test"].append(result["test"])
    for row in rows.values():
        for split in ("valid", "test"):
            runs = row.pop(f"_{split}")
            keys = sorted({k for r in runs for k in r} & set(REPORTED) | (
                {selection_metric} & {k for r in runs for k in r}))
            row[split] = {k: _mean_std([r[k] for r in runs if k in r]) for k in keys}
    ordered = [rows[k] for k in sorted(rows)]
    # a configuration with a diverged member is unstable: it is reported, never chosen
    scored = [r for r in ordered if selection_metric in r["valid"] and not r["diverged"]]
    winner = max(scored, key=lambda r: r["valid"][selection_metric]["mean"])["config_id"] \
        if scored else None
    return {"selection_metric": selection_metric, "selected_on": "valid",
            "winner": winner, "configurations": ordered}


def markdown(summary: dict, title: str = "Sweep") -> str:
    """sweep.md: the table of `summarise`'s output, the winner in bold."""
    metric = summary["selection_metric"]
    cols = [f"valid {metric}"] + [f"test {k}" for k in REPORTED]
    lines = [f"# {title}", "",
             f"Mean ± sample std over each configuration's members (seeds x data splits); "
             f"the winner (**bold**) has the best mean valid {metric} among the "
             "configurations none of whose members diverged.", "",
             "| config | settings | members | " + " | ".join(cols) + " | best epochs |",
             "|---" * (len(cols) + 4) + "|"]
    for row in summary["configurations"]:
        cells = [_fmt(row["valid"].get(metric))] + [_fmt(row["test"].get(k)) for k in REPORTED]
        name = f"c{row['config_id']:02d}"
        if row["config_id"] == summary["winner"]:
            name = f"**{name}**"
        lines.append(f"| {name} | {', '.join(row['settings']) or '(base)'} | "
                     f"{len(row['members'])} | " + " | ".join(cells) +
                     f" | {row['best_epochs']}"
                     f"{f' ({d} diverged)' if (d := row.get('diverged')) else ''} |")
    return "\n".join(lines) + "\n"


def _mean_std(values: list[float]) -> dict:
    mean = statistics.fmean(values) if values else float("nan")
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std, "n": len(values)}


def _fmt(stat: dict | None) -> str:
    return "-" if stat is None else f"{stat['mean']:.4f} ± {stat['std']:.4f}"
