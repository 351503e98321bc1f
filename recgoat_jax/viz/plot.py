"""A PNG of one or several training runs' curves, read from their run folders.

A run folder (``recgoat-jax train --out DIR``) holds ``metrics.jsonl`` (one JSON object per
epoch: ``epoch``, ``seconds``, ``loss`` and its terms, RecGOAT's diagnostics, and on evaluated
epochs ``valid/recall@20`` ...), ``result.json`` (``model``, ``best_epoch`` ...) and
``config.toml``. `plot_runs` draws them in one figure, a panel per quantity, one colour per run:

    from recgoat_jax.viz import plot_runs
    plot_runs([Path("runs/recgoat"), Path("runs/lightgcn")], Path("curves.png"))

`read_run` and `panels` need no matplotlib (tests and other tools use them); `plot_runs`
imports matplotlib (the ``plot`` extra) when called.
"""

from __future__ import annotations

import io
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from recgoat_jax.io_utils import atomic_write_bytes

MATPLOTLIB_MISSING = "recgoat-jax plot needs matplotlib: pip install 'recgoat-jax[plot]'"
DPI = 110

_METRIC = re.compile(r"^(valid|test)/(recall|ndcg)@(\d+)$")
_PLAN_SUM = re.compile(r"^plan_(.+)_sum$")
_PLAN_ERROR = re.compile(r"^plan_(.+)_marginal_error$")
_FUSION = re.compile(r"^fusion_weight_(.+)$")
_GATE = "user_gate_share"
# metrics.jsonl keys that are neither a loss term nor drawn
_NOT_TERMS = {"epoch", "seconds", "finite"}


@dataclass
class RunCurves:
    """One run folder's metrics.jsonl lines (sorted by epoch) and what labels it."""
    path: Path
    label: str
    model: str | None
    lines: list[dict]
    best_epoch: int | None = None
    result: dict = field(default_factory=dict)

    def keys(self) -> set[str]:
        return {k for line in self.lines for k, v in line.items() if _number(v) is not None}

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(epochs, values) of the lines that have a number under `key`; inf becomes nan."""
        xs, ys = [], []
        for line in self.lines:
            v = _number(line.get(key))
            if v is not None:
                xs.append(int(line["epoch"]))
                ys.append(v if math.isfinite(v) else math.nan)
        return xs, ys


@dataclass(frozen=True)
class Panel:
    """One subplot: `series` are (metrics.jsonl key, legend name) pairs.

    yscale: "log" (log-y when every value is positive), "wide" (log-y when positive and they
    span more than 20x), "linear". markers: draw a marker at each point (evaluated epochs)."""
    name: str
    title: str
    ylabel: str
    series: tuple[tuple[str, str], ...]
    yscale: str = "linear"
    markers: bool = False


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def read_run(run_dir: str | Path, label: str | None = None) -> RunCurves:
    """Read a run folder. Raises ValueError (one line naming the file) when it is not a run
    folder, metrics.jsonl cannot be read, or a line other than the last is not a JSON object
    with an integer ``epoch``; a broken LAST line (a run killed mid-write) is skipped."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "is not a folder" if run_dir.exists() else "does not exist"
        raise ValueError(f"{run_dir} {what}: give the --out folder of a training run")
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"{path} is missing: {run_dir} is not a training run folder")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read it ({getattr(e, 'strerror', None) or e})") from e
    raw = text.splitlines()
    last = max((i for i, s in enumerate(raw) if s.strip()), default=-1)
    lines = []
    for i, s in enumerate(raw):
        if not s.strip():
            continue
        try:
            obj = json.loads(s)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            if isinstance(obj.get("epoch"), bool) or not isinstance(obj.get("epoch"), int):
                raise ValueError("no integer 'epoch'")
        except ValueError as e:
            if i == last:  # a run killed while writing its last line
                break
            reason = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
            raise ValueError(f"{path}, line {i + 1}: not a metrics line ({reason})") from None
        lines.append(obj)
    lines.sort(key=lambda line: line["epoch"])

    result = _read_json(run_dir / "result.json")
    model = result.get("model") if isinstance(result.get("model"), str) else None
    if model is None:
        model = _config_model(run_dir / "config.toml")
    best = result.get("best_epoch")
    best = best if isinstance(best, int) and not isinstance(best, bool) and best >= 1 else None
    if label is None:
        label = f"{run_dir.absolute().name} ({model})" if model else run_dir.absolute().name
    return RunCurves(path=run_dir, label=label, model=model, lines=lines, best_epoch=best,
                     result=result)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path}: cannot read it as JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a JSON object")
    return obj


def _config_model(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        cfg = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"{path}: cannot read it as TOML ({e})") from None
    name = cfg.get("model", {}).get("name") if isinstance(cfg.get("model"), dict) else None
    return name if isinstance(name, str) else None


def _by_modality(keys: set[str], pattern: re.Pattern) -> tuple[tuple[str, str], ...]:
    found = sorted((m.group(1), k) for k in keys if (m := pattern.match(k)))
    return tuple((k, name) for name, k in found)


def panels(runs: list[RunCurves]) -> list[Panel]:
    """The panels a figure of `runs` has: always the loss terms and epoch seconds, Recall and
    NDCG when some epoch was evaluated, RecGOAT's diagnostics only when some run logged them."""
    keys = set().union(*(r.keys() for r in runs)) if runs else set()
    out = []
    diag = (_PLAN_SUM, _PLAN_ERROR, _FUSION)
    terms = sorted(k for k in keys if k not in _NOT_TERMS and k != "loss" and "/" not in k
                   and k != _GATE and not k.startswith("plan_")
                   and not any(p.match(k) for p in diag))
    loss = (("loss", "loss (total)"),) if "loss" in keys else ()
    if loss or terms:
        out.append(Panel("loss", "Training loss and its terms", "mean over the epoch's batches",
                         loss + tuple((t, t) for t in terms), yscale="log"))
    metrics = [m.groups() for k in keys if (m := _METRIC.match(k))]
    if metrics:
        ks = {int(k) for _, _, k in metrics}
        k = 20 if 20 in ks else min(ks)
        for metric, title in (("recall", "Recall"), ("ndcg", "NDCG")):
            series = tuple((f"{s}/{metric}@{k}", s) for s in ("valid", "test")
                           if f"{s}/{metric}@{k}" in keys)
            if series:
                out.append(Panel(metric, f"{title}@{k} (evaluated epochs)", f"{title}@{k}",
                                 series, markers=True))
    if "seconds" in keys:
        out.append(Panel("seconds", "Epoch time (the first one compiles)", "seconds",
                         (("seconds", "seconds"),), yscale="wide"))
    if series := _by_modality(keys, _PLAN_SUM):
        out.append(Panel("plan_sum", "Transport-plan mass", "sum of the plan", series))
    if series := _by_modality(keys, _PLAN_ERROR):
        out.append(Panel("plan_marginal_error", "Transport-plan marginal error",
                         "marginal error", series, yscale="log"))
    if series := _by_modality(keys, _FUSION):
        out.append(Panel("fusion_weight", "Fusion weights", "weight", series))
    if _GATE in keys:
        out.append(Panel("user_gate_share", "User gate share", "share", ((_GATE, "share"),)))
    return out


_LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 1)), (0, (8, 2)))
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def plot_runs(run_dirs: list[Path], out: Path, labels: list[str] | None = None) -> Path:
    """Draw the curves of the runs in `run_dirs` overlaid (one colour per run) into the PNG
    `out`, written atomically; return `out`. `labels`: one legend name per run (default: the
    folder's name and the model's). Raises ValueError for a folder that is not a readable run
    (see `read_run`), ImportError without matplotlib."""
    run_dirs = [Path(p) for p in run_dirs]
    if not run_dirs:
        raise ValueError("plot_runs needs at least one run folder")
    if labels is not None and len(labels) != len(run_dirs):
        raise ValueError(f"{len(labels)} labels for {len(run_dirs)} run folders: give one per run")
    runs = [read_run(p, None if labels is None else labels[i]) for i, p in enumerate(run_dirs)]
    if not any(r.lines for r in runs):
        raise ValueError(f"{', '.join(str(r.path / 'metrics.jsonl') for r in runs)}: "
                         "no epoch to plot")
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.ticker import (FuncFormatter, LogLocator, MaxNLocator,
                                       NullFormatter)
    except ImportError as e:
        raise ImportError(MATPLOTLIB_MISSING) from e

    plist = panels(runs)
    ncols = 2 if len(plist) <= 4 else 3
    nrows = math.ceil(len(plist) / ncols)
    fig = Figure(figsize=(5.4 * ncols, 3.7 * nrows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    one_run = len(runs) == 1
    palette = matplotlib.colormaps["tab10" if len(runs) <= 10 else "tab20"].colors
    last_epoch = max(int(line["epoch"]) for r in runs for line in r.lines)

    for ax, panel in zip(axes, plist):
        values = []
        for ri, run in enumerate(runs):
            for si, (key, name) in enumerate(panel.series):
                xs, ys = run.series(key)
                if not xs:
                    continue
                colour = palette[(si if one_run else ri) % len(palette)]
                ax.plot(xs, ys, color=colour, linestyle=_LINESTYLES[si % len(_LINESTYLES)],
                        marker=_MARKERS[si % len(_MARKERS)] if panel.markers or len(xs) == 1
                        else None, markersize=4, linewidth=1.6, alpha=0.9)
                values += [y for y in ys if not math.isnan(y)]
            if run.best_epoch is not None:
                ax.axvline(run.best_epoch, color="0.35" if one_run else palette[ri % len(palette)],
                           linestyle=":", linewidth=1.3, alpha=0.8)
        positive = bool(values) and min(values) > 0
        if positive and (panel.yscale == "log" or (
                panel.yscale == "wide" and max(values) > 20 * min(values))):
            ax.set_yscale("log")
            # plain numbers (0.1, 2, 6), not 10^-1 / 6x10^0; a few labelled minor ticks when
            # the curves span about two decades or less, so the axis has at least three labels
            decades = math.log10(max(values) / min(values))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
            if decades <= 2.2:
                subs = ((2, 3, 4, 5, 6, 7, 8, 9) if decades <= 0.5 else
                        (2, 3, 5) if decades <= 1.2 else (2, 5))
                ax.yaxis.set_minor_locator(LogLocator(subs=subs))
                ax.yaxis.set_minor_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
            else:
                ax.yaxis.set_minor_formatter(NullFormatter())
        else:
            ax.ticklabel_format(axis="y", useOffset=False)
            if values:  # a quantity that barely moves (plan mass) is drawn flat, not as noise
                lo, hi = min(values), max(values)
                mid, half = (lo + hi) / 2, 0.005 * abs(lo + hi) / 2
                if hi - lo < 2 * half:
                    ax.set_ylim(mid - half, mid + half)
        ax.set_ylabel(panel.ylabel, fontsize=9)
        ax.set_xlabel("epoch", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(0.5, last_epoch + 0.5)
        ax.tick_params(which="both", labelsize=8)
        ax.grid(True, which="major", alpha=0.3)
        if len(panel.series) > 1:  # which line is which quantity: style (and colour, one run)
            handles = [Line2D([], [], color=palette[si % len(palette)] if one_run else "0.25",
                              linestyle=_LINESTYLES[si % len(_LINESTYLES)],
                              marker=_MARKERS[si % len(_MARKERS)] if panel.markers else None,
                              markersize=4, label=name)
                       for si, (_, name) in enumerate(panel.series)]
            # above the plot area, under the title: never over a curve
            ax.legend(handles=handles, fontsize=8, loc="lower center", frameon=False,
                      bbox_to_anchor=(0.5, 1.0), ncols=min(len(handles), 5),
                      handlelength=2.4, borderaxespad=0.2, columnspacing=1.2)
            ax.set_title(panel.title, fontsize=11, pad=6 + 13 * math.ceil(len(handles) / 5))
        else:
            ax.set_title(panel.title, fontsize=11)
    for ax in axes[len(plist):]:
        ax.set_visible(False)

    if one_run:  # colours are the panels' quantities: the run is named in the title
        run = runs[0]
        best = f"; dotted line: best epoch ({run.best_epoch})" if run.best_epoch else ""
        fig.suptitle(f"{run.label}{best}", fontsize=12)
    else:
        handles = [Line2D([], [], color=palette[i % len(palette)], linewidth=2.5, label=r.label)
                   for i, r in enumerate(runs)]
        if any(r.best_epoch is not None for r in runs):
            handles.append(Line2D([], [], color="0.35", linestyle=":", linewidth=1.3,
                                  label="best epoch (run's colour)"))
        fig.legend(handles=handles, loc="outside upper center", fontsize=10, frameon=False,
                   ncols=min(len(handles), 4))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    out = Path(out)
    atomic_write_bytes(out, buf.getvalue())
    return out
