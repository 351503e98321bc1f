"""The tables of `experiments/protocol.py`: per-model summaries of the final runs, the paired
difference to LightGCN per data split with a 95% t interval, and the Markdown page.

Every function takes plain dicts (the sweep engine's result.json contents), so the numbers
can be recomputed from the run folders alone.
"""

from __future__ import annotations

import math
import statistics

REPORTED = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
PAIRED = ("recall@20", "ndcg@20")  # the differences to LightGCN that the table shows
BASELINE = "lightgcn"
# Row order of the tables (the JSON stores models with sorted keys); others follow, sorted.
ORDER = ("popularity", "mf", "lightgcn", "recgoat-reference", "recgoat-paper", "recgoat",
         "recgoat-no-user-side")


def ordered(models: dict) -> list[tuple[str, dict]]:
    """`models` items in `ORDER`, then any other name alphabetically."""
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(models.items(), key=lambda kv: (rank.get(kv[0], len(ORDER)), kv[0]))

# Two-sided 95% quantiles t_{0.975, df} of Student's t for df = 1..30 (no scipy dependency);
# beyond 30 the df = 30 value is used, which makes the interval slightly conservative.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
        2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
        2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile(df: int) -> float:
    """t_{0.975, df} (df >= 1) from `T975`."""
    if df < 1:
        raise ValueError(f"df = {df}: expected >= 1")
    return T975[min(df, len(T975)) - 1]


def paired_interval(diffs: list[float]) -> dict:
    """Mean of per-split differences with its 95% t interval.

    Args:
      diffs: ``[n]`` one difference (model - baseline, seeds averaged) per data split.
    Returns:
      ``{"mean", "low", "high", "n"}``; low / high are NaN with fewer than 2 splits.
    """
    n = len(diffs)
    mean = statistics.fmean(diffs) if diffs else math.nan
    if n < 2:
        return {"mean": mean, "low": math.nan, "high": math.nan, "n": n}
    half = t_quantile(n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


def mean_std(values: list[float]) -> dict:
    """``{"mean", "std" (sample; 0 for one value), "n"}``."""
    return {"mean": statistics.fmean(values) if values else math.nan,
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def per_split(runs: list[dict], metric: str) -> dict[int, float]:
    """``{data_seed: mean over train seeds of test metric}`` of a model's final runs."""
    by_split: dict[int, list[float]] = {}
    for run in runs:
        by_split.setdefault(run["data_seed"], []).append(run["test"][metric])
    return {seed: statistics.fmean(v) for seed, v in sorted(by_split.items())}


def paired_difference(runs: list[dict], baseline: list[dict], metric: str) -> dict:
    """Model minus baseline on every data split both have: ``{"splits": {seed: diff}, ...}``
    plus `paired_interval`'s keys."""
    mine, theirs = per_split(runs, metric), per_split(baseline, metric)
    diffs = {seed: mine[seed] - theirs[seed] for seed in mine if seed in theirs}
    return {"splits": diffs, **paired_interval(list(diffs.values()))}


def model_summary(runs: list[dict], baseline: list[dict] | None) -> dict:
    """Test metrics (mean ± std over every final run), per-split means, the paired
    differences to the baseline, cap hits and times of one model's final runs.

    Args:
      runs: one dict per final run: ``{"data_seed", "train_seed", "test": {metric: value},
        "hit_cap": bool, "epoch_seconds_member": float, ...}``.
      baseline: the baseline's runs (None: no difference computed).
    """
    out = {"n_runs": len(runs),
           "test": {m: mean_std([r["test"][m] for r in runs if m in r["test"]])
                    for m in REPORTED},
           "per_split": {m: per_split(runs, m) for m in PAIRED},
           "hit_cap": sum(bool(r["hit_cap"]) for r in runs),
           "diverged": sum(bool(r.get("diverged")) for r in runs),
           "epoch_seconds_member": statistics.median(
               [r["epoch_seconds_member"] for r in runs]) if runs else math.nan}
    if baseline:
        out["vs_" + BASELINE] = {m: paired_difference(runs, baseline, m) for m in PAIRED}
    return out


def markdown(report: dict) -> str:
    """The results page of one setting (`protocol.build_report`'s dict)."""
    lines = []
    if report["partial"]:
        lines += [f"**PARTIAL**: {report['partial']}", ""]
    p = report["protocol"]
    lines += [f"# Protocol: {report['setting']}", "",
              f"Tuned with {p['budget']} random configurations per trainable model on data seed "
              f"{p['tune_seed']} (1 train seed), chosen on valid {p['selection_metric']}; the "
              f"chosen configuration then trained on data seeds {p['split_seeds']} x train "
              f"seeds {p['train_seeds']}. Test metrics: mean ± sample std over those runs. "
              f"Paired difference to LightGCN: per data split (train seeds averaged), mean and "
              f"95% t interval over the splits.", "",
              *results_table(report), "",
              "Wall and epoch times are bookkeeping, not speed figures: most runs shared the "
              "machine's cores with another protocol process (the benchmarks measure speed). "
              "'wall s (tune+final)' counts the reported final sweep only; a final rerun at a "
              "raised cap also spent the sweeps at the lower caps, which the total below "
              "includes."]
    lines += ["", "## Chosen configurations", "",
              "| model | config | tuning configurations | chosen (valid "
              f"{p['selection_metric']}) | epoch cap |", "|---|---|---|---|---|"]
    for name, m in ordered(report["models"]):
        valid = m.get("tune_valid")
        tuned = "tune_winner" in m or not m["tune_configurations"]
        chosen = " ".join(m["chosen"]) or "(the config's)" if tuned else "(tuning not finished)"
        lines.append(f"| {name} | {' '.join([m['config'], *m['overrides']])} | "
                     f"{m['tune_configurations']} | {chosen}"
                     f"{f' ({valid:.4f})' if valid is not None else ''} | {m.get('cap') or '-'} |")
    lines += ["", f"Total compute (every finished sweep group under the runs folder): "
                  f"{report['total_wall_seconds'] / 3600:.2f} h.", "",
              f"Command: `{report['command']}`  ", f"Git commit: {report['git_commit']}  ",
              f"Date: {report['date']}  ", f"Runs: `{report['runs_dir']}` (resolved configs in "
              "the JSON beside this page and in every run's config.toml)."]
    return "\n".join(lines) + "\n"


def results_table(report: dict) -> list[str]:
    """The page's main table (one row per model, test metrics, paired differences to
    LightGCN, cap hits, times) as Markdown lines; README.md shows it too (experiments/report.py)."""
    lines = ["| model | runs | " + " | ".join(f"test {m}" for m in REPORTED) + " | " +
             " | ".join(f"Δ{m} vs LightGCN [95%]" for m in PAIRED) +
             " | at cap (final/tune) | diverged (final/tune) | wall s (tune+final) | "
             "s/epoch/member |", "|---" * (len(REPORTED) + len(PAIRED) + 6) + "|"]
    for name, m in ordered(report["models"]):
        final = m.get("final")
        if final is None:
            lines.append(f"| {name} | (not finished) |" + " |" * (len(REPORTED) + len(PAIRED) + 4))
            continue
        cells = [_fmt(final["test"][k]) for k in REPORTED]
        diffs = final.get("vs_" + BASELINE)
        cells += [_fmt_diff(diffs[k]) if diffs and name != BASELINE else "-" for k in PAIRED]
        lines.append(f"| {name} | {final['n_runs']} | " + " | ".join(cells) +
                     f" | {final['hit_cap']}/{m['tune_hit_cap']} | "
                     f"{final.get('diverged', 0)}/{m.get('tune_diverged', 0)} | "
                     f"{m['tune_wall_seconds']:.0f}+{m['final_wall_seconds']:.0f} | "
                     f"{final['epoch_seconds_member']:.3f} |")
    return lines


def _fmt(stat: dict) -> str:
    return "-" if not stat["n"] else f"{stat['mean']:.4f} ± {stat['std']:.4f}"


def _fmt_diff(d: dict) -> str:
    if not d["n"]:
        return "-"
    if math.isnan(d["low"]):
        return f"{d['mean']:+.4f}"
    return f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
