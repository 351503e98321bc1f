"""Write README.md's result blocks from the committed results files, or check that they match.

    python experiments/report.py            # rewrite every block of README.md in place
    python experiments/report.py --check    # exit 1 if a block differs or a figure has no file

A block is a pair of HTML comments (invisible on GitHub) around generated Markdown:

    <!-- report: protocol ml100k -->
    ...written by this script...
    <!-- /report -->

Kinds:
- ``protocol SETTING``: the main table of ``experiments/results/protocol/SETTING.json``
  (`protocol_report.results_table`), its page, whether it is partial, and one sentence on
  the RecGOAT variants against tuned LightGCN (`outcome`). The page SETTING.md beside the
  JSON is rewritten (checked) too: it is `protocol_report.markdown` of the JSON, so a page
  follows its file without the runs behind it (ML-100K's need --data-path);
- ``table PAGE [N]``: the N-th (default 1st) Markdown table of a committed results page,
  verbatim, with a link to it. Those pages are written by the benchmark scripts from their
  JSON beside them.

``--check`` also looks for measured figures outside the blocks (decimals, percentages,
speed-ups, seconds, bytes; code spans and fences are skipped): every number the README
states about a result must come from a block, so that a re-run that changes it cannot leave
the README behind. `tests/experiments/test_report.py` runs the check.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PROTOCOL_DIR = Path("experiments/results/protocol")
RECGOAT_VARIANTS = ("recgoat-reference", "recgoat-paper", "recgoat", "recgoat-no-user-side")

BLOCK = re.compile(r"(<!-- report: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- /report -->)",
                   re.DOTALL)
# Figures that state a measurement: 0.3422, 28%, 2.75x, 24.2 s, 7.0 GiB, 1.5e-3 ...
FIGURE = re.compile(r"(?<![\w.])(\d+(\.\d+)?\s?(%|x\b|ms\b|s\b|GiB\b|MiB\b|GB\b|MB\b|h\b|"
                    r"min\b)|\d+\.\d+(e-?\d+)?)")
CODE = re.compile(r"```.*?```|`[^`\n]*`|\]\([^)]*\)|<!--.*?-->", re.DOTALL)
# Numbers that name a paper or a setting, not a measurement.
NOT_FIGURES = re.compile(r"arXiv \S+|95% (t )?interval|epsilon \d\S*")


class ReportError(Exception):
    """A block that cannot be written (unknown kind, missing file); one line for the user."""


@functools.cache
def _protocol_report():
    spec = importlib.util.spec_from_file_location("_report_protocol_report",
                                                  Path(__file__).with_name("protocol_report.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tuned_variants(report: dict) -> list[tuple[float, str]]:
    """(tuning valid Recall@20 of the chosen configuration, name) of every RecGOAT variant
    whose tuning sweep has finished in a protocol report."""
    models = report["models"]
    return [(models[n]["tune_valid"], n) for n in RECGOAT_VARIANTS
            if models.get(n, {}).get("tune_valid") is not None]


def outcome(report: dict) -> str:
    """One plain sentence: the RecGOAT variant chosen on valid (best tuning valid Recall@20)
    and its paired test difference to tuned LightGCN, or why there is none yet."""
    models = report["models"]
    tuned = tuned_variants(report)
    if not tuned:
        return "No RecGOAT variant has finished its tuning here yet."
    untuned = [n for n in RECGOAT_VARIANTS
               if n in models and models[n].get("tune_valid") is None]
    if untuned:  # the choice on valid is only made once every compared variant is tuned
        return ("No RecGOAT variant is chosen on valid yet: tuning not finished for "
                f"{', '.join(f'`{n}`' for n in untuned)}.")
    _, best = max(tuned)
    diff = (models[best].get("final") or {}).get("vs_lightgcn", {}).get("recall@20")
    if (not models[best].get("final_finished") or not diff or diff["n"] < 2
            or diff["low"] != diff["low"]):
        return (f"The RecGOAT variant with the best tuning valid Recall@20 is `{best}`; its "
                "final runs are not finished yet.")
    low, high = diff["low"], diff["high"]
    if low > 0:
        verdict = "beats tuned LightGCN"
    elif high < 0:
        verdict = "is below tuned LightGCN"
    else:
        verdict = "does not differ from tuned LightGCN beyond noise"
    lightgcn = models["lightgcn"]["final"]["test"]["recall@20"]["mean"]
    return (f"The RecGOAT variant chosen on valid, `{best}`, {verdict} on test Recall@20: "
            f"{diff['mean']:+.4f} ({diff['mean'] / lightgcn:+.1%} of LightGCN's "
            f"{lightgcn:.4f}), 95% interval [{low:+.4f}, {high:+.4f}] over "
            f"{diff['n']} splits.")


def protocol_block(setting: str) -> str:
    page = PROTOCOL_DIR / f"{setting}.md"
    file = ROOT / PROTOCOL_DIR / f"{setting}.json"
    if not file.exists():
        return (f"Not run yet: `python experiments/protocol.py --setting {setting} "
                "--raise-cap --max-group 2`.\n")
    report = json.loads(file.read_text())
    head = (f"**Partial** ({report['partial']}): " if report["partial"] else "")
    lines = [f"{head}[{page}]({page}), git commit `{report['git_commit'][:12]}`, "
             f"{report['total_wall_seconds'] / 3600:.2f} h of training.", "",
             *_protocol_report().results_table(report), "", outcome(report)]
    return "\n".join(lines) + "\n"


def protocol_pages(text: str) -> dict[Path, str]:
    """{page path: its content from its JSON} for every ``protocol`` block of `text` whose
    results file exists."""
    pages = {}
    for m in BLOCK.finditer(text):
        kind, *args = m.group("spec").split()
        file = ROOT / PROTOCOL_DIR / f"{args[0]}.json" if kind == "protocol" and args else None
        if file is not None and file.exists():
            pages[file.with_suffix(".md")] = _protocol_report().markdown(
                json.loads(file.read_text()))
    return pages


def table_block(page: str, index: int = 1) -> str:
    file = ROOT / page
    if not file.exists():
        raise ReportError(f"README block 'table {page}': no such file")
    tables, current = [], []
    for line in file.read_text().splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    if not 1 <= index <= len(tables):
        raise ReportError(f"README block 'table {page} {index}': the page has "
                          f"{len(tables)} table(s)")
    return "\n".join(tables[index - 1]) + f"\n\n(From [{page}]({page}).)\n"


def render(spec: str) -> str:
    kind, *args = spec.split()
    if kind == "protocol" and len(args) == 1:
        return protocol_block(args[0])
    if kind == "table" and len(args) in (1, 2):
        return table_block(args[0], int(args[1]) if len(args) == 2 else 1)
    raise ReportError(f"README block '{spec}': expected 'protocol SETTING' or "
                      "'table PAGE [N]'")


def rewrite(text: str) -> str:
    """`text` with every block's body regenerated."""
    return BLOCK.sub(lambda m: m.group(1) + render(m.group("spec")) + m.group(4), text)


def stray_figures(text: str) -> list[tuple[int, str]]:
    """(line number, figure) of measured figures outside blocks, code and link targets."""
    found = []
    outside = BLOCK.sub(lambda m: m.group(1) + "\n" * m.group("body").count("\n") + m.group(4),
                        text)
    outside = CODE.sub(lambda m: "\n" * m.group(0).count("\n"), outside)
    outside = NOT_FIGURES.sub("", outside)
    for number, line in enumerate(outside.splitlines(), 1):
        found += [(number, m.group(0)) for m in FIGURE.finditer(line)]
    return found


def check(text: str) -> list[str]:
    """Problems of `text` (README content): blocks that differ from the files, stray figures."""
    problems = []
    for m in BLOCK.finditer(text):
        if render(m.group("spec")) != m.group("body"):
            problems.append(f"README.md block '{m.group('spec')}' differs from its results file "
                            "(run python experiments/report.py)")
    problems += [f"{page.relative_to(ROOT)} differs from the JSON beside it (run python "
                 "experiments/report.py)" for page, content in protocol_pages(text).items()
                 if not page.exists() or page.read_text() != content]
    problems += [f"README.md line {n}: figure '{f}' outside a report block (write it from a "
                 "results file, or remove it)" for n, f in stray_figures(text)]
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 on a mismatch")
    p.add_argument("--readme", default=str(README))
    args = p.parse_args(argv)
    path = Path(args.readme)
    try:
        text = path.read_text()
        if args.check:
            problems = check(text)
            for line in problems:
                print(line, file=sys.stderr)
            return 1 if problems else 0
        new = rewrite(text)
        pages = protocol_pages(new)
    except (ReportError, OSError, KeyError, ValueError) as e:
        raise SystemExit(f"report.py: error: {e}") from None
    if new != text:
        path.write_text(new)
    for page, content in pages.items():
        if not page.exists() or page.read_text() != content:
            page.write_text(content)
    print(f"report.py: {len(BLOCK.findall(new))} block(s) written in {path}, "
          f"{len(pages)} protocol page(s) beside their JSON")
    return 0


if __name__ == "__main__":
    sys.exit(main())
