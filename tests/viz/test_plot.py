"""recgoat_jax.viz.plot: run folders (synthetic metrics.jsonl / result.json) -> one PNG."""

import json
import math
import struct
import sys
from pathlib import Path

import pytest

from recgoat_jax.viz.plot import MATPLOTLIB_MISSING, panels, plot_runs, read_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_run(root: Path, name: str, model: str = "lightgcn", epochs: int = 6, every: int = 2,
             diagnostics: bool = False, best: int | None = 4, result: bool = True,
             config: bool = True) -> Path:
    """A run folder as `recgoat-jax train --out` leaves it (metrics lines of `epochs` epochs,
    evaluated every `every` epochs; RecGOAT diagnostics when `diagnostics`)."""
    run = root / name
    run.mkdir(parents=True)
    lines = []
    for epoch in range(1, epochs + 1):
        line = {"epoch": epoch, "seconds": 5.0 if epoch == 1 else 0.1 + 0.01 * epoch,
                "loss": 0.7 - 0.02 * epoch, "bpr": 0.69 - 0.02 * epoch, "reg": 2.0 + 0.01 * epoch,
                "finite": 1.0}
        if model == "recgoat":
            line.update({"cl": 6.1 - 0.05 * epoch, "plan_image_sum": 64.0,
                         "plan_text_sum": 64.0 + 1e-4 * epoch})
        if diagnostics:
            line.update({"plan_image_marginal_error": 1e-2 / epoch,
                         "plan_text_marginal_error": 3e-3 / epoch,
                         "fusion_weight_image": 0.4 + 0.01 * epoch,
                         "fusion_weight_text": 0.6 - 0.01 * epoch,
                         "user_gate_share": 0.5 + 0.02 * epoch})
        if epoch % every == 0 or epoch == epochs:
            for k in (10, 20):
                for split, shift in (("valid", 0.0), ("test", -0.02)):
                    line[f"{split}/recall@{k}"] = 0.3 + 0.02 * epoch + shift + 0.01 * k
                    line[f"{split}/ndcg@{k}"] = 0.1 + 0.01 * epoch + shift
        lines.append(line)
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    if result:
        (run / "result.json").write_text(json.dumps({"model": model, "best_epoch": best}))
    if config:
        (run / "config.toml").write_text(f'[model]\nname = "{model}"\n')
    return run


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_one_run_writes_a_png(tmp_path):
    run = make_run(tmp_path, "lgcn")
    out = plot_runs([run], tmp_path / "pics" / "curves.png")
    assert out == tmp_path / "pics" / "curves.png"
    assert out.stat().st_size > 20_000
    # 4 panels (loss, recall, ndcg, seconds): 2 x 2 panels of 5.4 x 3.7 in (+0.6 in) at 110 dpi
    assert png_size(out) == (1188, 880)
    assert [p.name for p in out.parent.iterdir()] == ["curves.png"]  # no temporary file left


def test_two_runs_overlaid_and_labels(tmp_path):
    a = make_run(tmp_path, "a", model="recgoat", diagnostics=True)
    b = make_run(tmp_path, "b", epochs=9, every=3, best=6)
    out = plot_runs([a, b], tmp_path / "ab.png", labels=["RecGOAT", "LightGCN"])
    assert out.stat().st_size > 20_000
    # 8 panels: 3 x 3
    assert png_size(out) == (1782, 1287)
    with pytest.raises(ValueError, match="1 labels for 2 run folders"):
        plot_runs([a, b], tmp_path / "x.png", labels=["only one"])
    assert not (tmp_path / "x.png").exists()


def test_recgoat_diagnostics_add_panels(tmp_path):
    lightgcn = read_run(make_run(tmp_path, "lgcn"))
    recgoat_now = read_run(make_run(tmp_path, "rg", model="recgoat"))
    recgoat = read_run(make_run(tmp_path, "rg_diag", model="recgoat", diagnostics=True))
    base = ["loss", "recall", "ndcg", "seconds"]
    assert [p.name for p in panels([lightgcn])] == base
    # without the new diagnostic keys: only the plan mass is added
    assert [p.name for p in panels([recgoat_now])] == base + ["plan_sum"]
    names = [p.name for p in panels([recgoat])]
    assert names == base + ["plan_sum", "plan_marginal_error", "fusion_weight",
                            "user_gate_share"]
    # overlaid: the union; the loss panel has every run's terms, total first
    both = panels([lightgcn, recgoat])
    assert [p.name for p in both] == names
    loss = both[0]
    assert [k for k, _ in loss.series] == ["loss", "bpr", "cl", "reg"]
    assert loss.yscale == "log"
    by_name = {p.name: p for p in both}
    assert [k for k, _ in by_name["plan_sum"].series] == ["plan_image_sum", "plan_text_sum"]
    assert by_name["plan_marginal_error"].yscale == "log"
    assert by_name["recall"].series == (("valid/recall@20", "valid"), ("test/recall@20", "test"))
    assert by_name["recall"].markers


def test_other_k_when_no_20(tmp_path):
    run = make_run(tmp_path, "r")
    lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        for key in [k for k in line if k.endswith("@20")]:
            del line[key]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    by_name = {p.name: p for p in panels([read_run(run)])}
    assert by_name["ndcg"].title.startswith("NDCG@10")


def test_read_run_labels_and_best_epoch(tmp_path):
    run = read_run(make_run(tmp_path, "r1", model="recgoat", best=4))
    assert run.label == "r1 (recgoat)" and run.model == "recgoat" and run.best_epoch == 4
    assert [line["epoch"] for line in run.lines] == [1, 2, 3, 4, 5, 6]
    epochs, values = run.series("valid/recall@20")
    assert epochs == [2, 4, 6] and values[0] == pytest.approx(0.54)
    # no result.json (a run still going): the model from config.toml, no best epoch
    run = read_run(make_run(tmp_path, "r2", result=False))
    assert run.label == "r2 (lightgcn)" and run.best_epoch is None
    run = read_run(make_run(tmp_path, "r3", result=False, config=False), label="mine")
    assert run.label == "mine"
    assert read_run(make_run(tmp_path, "r4", result=False, config=False)).label == "r4"


def test_truncated_last_line_is_skipped(tmp_path):
    run = make_run(tmp_path, "killed")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 7, "seconds": 0.1, "lo')  # killed while writing
    assert [line["epoch"] for line in read_run(run).lines] == [1, 2, 3, 4, 5, 6]
    assert plot_runs([run], tmp_path / "k.png").stat().st_size > 20_000


def test_bad_middle_line_names_file_and_line(tmp_path):
    run = make_run(tmp_path, "bad")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[2] = lines[2][:20]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"bad/metrics\.jsonl, line 3: not a metrics line"):
        read_run(run)
    lines[2] = '{"seconds": 1.0}'
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"line 3: .*no integer 'epoch'"):
        plot_runs([run], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_not_a_run_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"empty/metrics\.jsonl is missing: .* not a training run"):
        plot_runs([empty], tmp_path / "e.png")
    with pytest.raises(ValueError, match="does not exist"):
        plot_runs([tmp_path / "nowhere"], tmp_path / "e.png")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="is not a folder"):
        plot_runs([tmp_path / "file.txt"], tmp_path / "e.png")
    run = make_run(tmp_path, "badresult")
    (run / "result.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"badresult/result\.json: cannot read it as JSON"):
        read_run(run)
    nothing = make_run(tmp_path, "noepochs")
    (nothing / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="no epoch to plot"):
        plot_runs([nothing], tmp_path / "e.png")
    with pytest.raises(ValueError, match="at least one run"):
        plot_runs([], tmp_path / "e.png")
    assert not (tmp_path / "e.png").exists()


def test_non_finite_values_and_overwrite(tmp_path):
    run = make_run(tmp_path, "nan", model="recgoat", diagnostics=True)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])
    last.update(loss=math.nan, cl=math.inf, plan_image_marginal_error=math.nan)
    lines[-1] = json.dumps(last)  # json writes NaN / Infinity, as a diverged run's line has
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "nan.png"
    out.write_bytes(b"old")
    plot_runs([run], out)
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_missing_matplotlib_says_how_to_install(tmp_path, monkeypatch):
    run = make_run(tmp_path, "r")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError) as e:
        plot_runs([run], tmp_path / "r.png")
    assert str(e.value) == MATPLOTLIB_MISSING
    assert "pip install 'recgoat-jax[plot]'" in MATPLOTLIB_MISSING
