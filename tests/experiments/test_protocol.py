"""experiments/protocol.py: the smoke run end to end on `tiny` (equal budgets, selection on
valid, a rerun that trains nothing, the partial marker), bad input, and the paired-difference
interval against a hand computation."""

import json
import math
import shutil
import statistics
import time

import pytest

MODELS = "popularity,mf,lightgcn"
TRAINED = ("mf", "lightgcn")


@pytest.fixture(scope="module")
def protocol(load_script):
    return load_script("experiments/protocol.py", "protocol")


@pytest.fixture(scope="module")
def smoke(protocol, tmp_path_factory):
    """One smoke run: (argv, runs dir, report dict, seconds)."""
    root = tmp_path_factory.mktemp("protocol")
    argv = ["--setting", "small_informative", "--smoke", "--models", MODELS, "--quiet",
            "--runs-dir", str(root / "runs"), "--results-dir", str(root / "results")]
    t0 = time.perf_counter()
    assert protocol.main(argv) == 0
    seconds = time.perf_counter() - t0
    print(f"protocol smoke run: {seconds:.1f} s")
    report = json.loads((root / "results" / "small_informative.json").read_text())
    return argv, root / "runs", report, seconds


def test_smoke_writes_a_row_per_model(smoke):
    _, _, report, _ = smoke
    page = (smoke[1].parent / "results" / "small_informative.md").read_text()
    for name in MODELS.split(","):
        final = report["models"][name]["final"]
        assert final["n_runs"] == 1
        assert 0.0 <= final["test"]["recall@20"]["mean"] <= 1.0
        assert f"| {name} | 1 |" in page
    # the models outside --models have no runs: the page says so at the top
    assert page.startswith("**PARTIAL**") and "recgoat (not in --models)" in report["partial"]
    assert report["missing"] == ["recgoat-reference", "recgoat-paper", "recgoat",
                                 "recgoat-no-user-side"]
    assert report["models"]["mf"]["final"]["vs_lightgcn"]["recall@20"]["n"] == 1
    assert report["git_commit"] and report["date"] and "--smoke" in report["command"]
    assert report["models"]["lightgcn"]["resolved_config"]["data"]["preset"] == "tiny"


def test_every_trainable_model_gets_the_same_tuning_budget(smoke):
    _, runs, report, _ = smoke
    draws = {}
    for name in TRAINED:
        assert report["models"][name]["tune_configurations"] == 2
        sweep = json.loads((runs / "tune" / name / "sweep.json").read_text())
        assert len(sweep["configurations"]) == 2
        draws[name] = [c["settings"] for c in sweep["configurations"]]
    assert draws["mf"] == draws["lightgcn"]  # the same (lr, decay) points for every model
    assert report["models"]["popularity"]["tune_configurations"] == 0


def test_chosen_configuration_is_the_best_on_valid(smoke):
    _, runs, report, _ = smoke
    for name in TRAINED:
        sweep = json.loads((runs / "tune" / name / "sweep.json").read_text())
        valid = {}
        for row in sweep["configurations"]:
            results = [json.loads((runs / "tune" / name / m / "result.json").read_text())
                       for m in row["members"]]
            valid[tuple(row["settings"])] = statistics.fmean(r["valid"]["recall@20"]
                                                             for r in results)
        best = max(valid, key=valid.get)
        assert tuple(report["models"][name]["chosen"]) == best
        final_cfg = report["models"][name]["resolved_config"]
        lr = float(dict(s.split("=") for s in best)["train.lr"])
        assert final_cfg["train"]["lr"] == pytest.approx(lr)
        assert final_cfg["data"]["seed"] != report["protocol"]["tune_seed"]  # another split


def test_rerun_skips_finished_work(protocol, smoke, capsys):
    argv, runs, _, seconds = smoke
    stamps = {p: p.stat().st_mtime_ns for p in runs.rglob("result.json")}
    assert len(stamps) == 2 * 2 + 2 + 1  # tuning of mf, lightgcn; their finals; popularity
    capsys.readouterr()
    t0 = time.perf_counter()
    assert protocol.main(argv) == 0
    assert "0 sweep(s) trained" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("result.json")} == stamps
    assert time.perf_counter() - t0 < max(10.0, seconds / 3)


def test_a_missing_final_sweep_marks_the_table_partial(protocol, smoke, tmp_path, capsys):
    argv, runs, _, _ = smoke
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    (copy / "final" / "lightgcn" / "sweep.json").unlink()  # as if interrupted in its last group
    args = [*argv, "--report-only"]
    args[args.index("--runs-dir") + 1] = str(copy)
    args[args.index("--results-dir") + 1] = str(tmp_path / "results")
    assert protocol.main(args) == 0
    assert "0 sweep(s) trained" in capsys.readouterr().out
    report = json.loads((tmp_path / "results" / "small_informative.json").read_text())
    assert "lightgcn" in report["missing"] and "lightgcn" in report["partial"]
    # its finished group's time still counts, as in the total-compute line
    (run,) = [json.loads(f.read_text())
              for f in (copy / "final" / "lightgcn").glob("*/result.json")]
    assert run["sweep_group_size"] == 1
    assert report["models"]["lightgcn"]["final_wall_seconds"] == pytest.approx(run["wall_seconds"])


def test_a_page_written_while_training_shows_the_later_models_from_disk(protocol, smoke,
                                                                        tmp_path, monkeypatch):
    # mf's final is retrained; the page written right after it must still show lightgcn
    # (later in MODELS, finished on disk), as an interruption would leave it
    argv, runs, report, _ = smoke
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    shutil.rmtree(copy / "final" / "mf")
    args = [*argv, "--max-group", "1"]
    args[args.index("--models") + 1] = "mf"
    args[args.index("--runs-dir") + 1] = str(copy)
    args[args.index("--results-dir") + 1] = str(tmp_path / "results")
    pages = []
    write = protocol.write_report
    monkeypatch.setattr(protocol, "write_report",
                        lambda ctx, infos: pages.append(write(ctx, infos)) or pages[-1])
    assert protocol.main(args) == 0
    first = pages[0]["models"]
    assert first["mf"]["final"]["n_runs"] == 1
    assert first["lightgcn"]["chosen"] == report["models"]["lightgcn"]["chosen"] != []
    assert first["lightgcn"]["final"]["test"] == report["models"]["lightgcn"]["final"]["test"]


def test_a_runs_folder_of_another_search_is_refused(protocol, smoke):
    argv = [*smoke[0], "--sample-seed", "7"]
    with pytest.raises(SystemExit, match="holds a sweep of other members"):
        protocol.main(argv)


def test_a_sweep_whose_stop_fires_on_its_finished_groups_trains_nothing(protocol, smoke,
                                                                        tmp_path, monkeypatch,
                                                                        capsys):
    argv, runs, _, _ = smoke
    copy = tmp_path / "mf"
    shutil.copytree(runs / "tune" / "mf", copy)
    (copy / "sweep.json").unlink()
    ctx = protocol.parse_args([*argv, "--max-group", "1"])  # one group per member
    model = next(m for m in protocol.MODELS if m.name == "mf")
    configs = protocol.search_space(model, ctx.budget, ctx.sample_seed)
    members = protocol.build_members(ctx, model, configs, [ctx.tune_seed],
                                     [ctx.train_seeds[0]], ctx.epochs, False)
    (copy / members[1].name / "result.json").unlink()  # as if its group was interrupted
    trained = []
    monkeypatch.setattr(protocol.sweep_run, "GroupTrainer",
                        lambda *a, **kw: trained.append(a) or pytest.fail("trained a group"))
    seen = []
    capsys.readouterr()
    assert protocol.run_or_load(ctx, members, copy, True,
                                stop=lambda done: seen.append(len(done)) or True) is None
    assert seen == [1] and trained == [] and ctx.trained == 0
    err = capsys.readouterr().err
    assert "left unfinished" in err and "training" not in err
    # a stop that does not fire on the finished runs: the sweep resumes its second group
    with pytest.raises(pytest.fail.Exception):
        protocol.run_or_load(ctx, members, copy, True, stop=lambda done: False)
    assert len(trained) == 1 and ctx.trained == 1
    assert "training" in capsys.readouterr().err


def _cap_trace(protocol, monkeypatch, tmp_path, caps_hit, winner_hit_cap, started=(),
               stopped=(), raise_cap=True):
    """The final-sweep folders `protocol.final` visits for mf (with --raise-cap unless
    `raise_cap` is False), when runs at a cap in `caps_hit` reach it (training replaced by
    stubs; `started`: folders that already hold a sweep plan; `stopped`: folders whose sweep
    ends unfinished, as when its `stop` fires after a group)."""
    ctx = protocol.parse_args(["--setting", "small_informative", "--smoke", "--quiet",
                               "--runs-dir", str(tmp_path)] + ["--raise-cap"] * raise_cap)
    for name in started:
        (tmp_path / "final" / name).mkdir(parents=True)
        (tmp_path / "final" / name / "sweep_plan.json").write_text("{}")
    visited = []

    def run_or_load(ctx, members, out, train, stop=None):
        visited.append(out.name)
        return None if out.name in stopped else {"groups": [[m.name] for m in members]}

    def run_records(members, out, cap):
        return [{"name": m.name, "hit_cap": cap in caps_hit} for m in members]

    monkeypatch.setattr(protocol, "run_or_load", run_or_load)
    monkeypatch.setattr(protocol, "run_records", run_records)
    model = next(m for m in protocol.MODELS if m.name == "mf")
    info = protocol.final(ctx, model, ["train.lr=0.01"], train=True,
                          winner_hit_cap=winner_hit_cap)
    return visited, info["cap"]


def test_raise_cap_doubles_the_cap_while_runs_reach_it(protocol, monkeypatch, tmp_path):
    # smoke cap 4: runs reach 4 and 8, not 16
    visited, cap = _cap_trace(protocol, monkeypatch, tmp_path, {4, 8}, winner_hit_cap=False)
    assert visited == ["mf", "mf_cap8", "mf_cap16"] and cap == 16


def test_a_winner_tuned_at_the_cap_starts_its_final_at_twice_the_cap(protocol, monkeypatch,
                                                                     tmp_path):
    visited, cap = _cap_trace(protocol, monkeypatch, tmp_path, {4}, winner_hit_cap=True)
    assert visited == ["mf_cap8"] and cap == 8
    # a final sweep already started at the base cap is continued, not skipped
    visited, cap = _cap_trace(protocol, monkeypatch, tmp_path / "b", {4}, winner_hit_cap=True,
                              started=["mf"])
    assert visited == ["mf", "mf_cap8"] and cap == 8


def test_a_run_at_the_cap_skips_the_rest_of_its_sweep_to_twice_the_cap(protocol,
                                                                      monkeypatch, tmp_path):
    # the sweep at cap 4 ended unfinished (its stop fired) with a finished run at the cap
    visited, cap = _cap_trace(protocol, monkeypatch, tmp_path, {4}, winner_hit_cap=False,
                              stopped={"mf"})
    assert visited == ["mf", "mf_cap8"] and cap == 8
    # unfinished with no run at the cap (interrupted): it stays the reported sweep
    visited, cap = _cap_trace(protocol, monkeypatch, tmp_path / "b", set(),
                              winner_hit_cap=False, stopped={"mf"})
    assert visited == ["mf"] and cap == 4
    # without --raise-cap an unfinished sweep at the cap is reported as it is
    visited, cap = _cap_trace(protocol, monkeypatch, tmp_path / "c", {4},
                              winner_hit_cap=False, stopped={"mf"}, raise_cap=False)
    assert visited == ["mf"] and cap == 4


def test_the_final_sweeps_stop_fires_on_a_run_at_the_cap_only(protocol, monkeypatch,
                                                              tmp_path):
    ctx = protocol.parse_args(["--setting", "small_informative", "--smoke", "--raise-cap",
                               "--quiet", "--runs-dir", str(tmp_path)])
    stops = {}

    def run_or_load(ctx, members, out, train, stop=None):
        stops[out.name] = stop
        return None

    monkeypatch.setattr(protocol, "run_or_load", run_or_load)
    model = next(m for m in protocol.MODELS if m.name == "mf")
    protocol.final(ctx, model, ["train.lr=0.01"], train=True)
    stop = stops["mf"]  # smoke cap: 4 epochs
    assert not stop([{"epochs_run": 3, "diverged": None}])
    assert stop([{"epochs_run": 3, "diverged": None}, {"epochs_run": 4, "diverged": None}])
    assert not stop([{"epochs_run": 4, "diverged": "nan loss at epoch 4"}])
    ctx.raise_cap = False
    protocol.final(ctx, model, ["train.lr=0.01"], train=True)
    assert stops["mf"] is None


@pytest.mark.parametrize("argv, flag", [
    (["--setting", "ml100k"], "--setting ml100k needs --data-path"),
    (["--setting", "ml100k", "--data-path", "/nonexistent/ml-100k"], "--data-path"),
    (["--setting", "longtail", "--models", "lightgcn,bpr"], "--models bpr"),
    (["--setting", "longtail", "--budget", "0"], "--budget 0"),
    (["--setting", "longtail", "--max-group", "-2"], "--max-group -2"),
    (["--setting", "longtail", "--data-path", "/tmp"], "--data-path"),
])
def test_bad_input_is_one_line_naming_the_flag(protocol, argv, flag):
    with pytest.raises(SystemExit) as e:
        protocol.main(argv)
    message = str(e.value)
    assert message.startswith("protocol.py: error: ") and flag in message
    assert "\n" not in message


def test_paired_interval_matches_a_hand_computation(load_script):
    report = load_script("experiments/protocol_report.py", "protocol_report")
    # differences 0.01, 0.03, 0.02: mean 0.02, sample sd 0.01, t_{0.975, 2} = 4.303
    half = 4.303 * 0.01 / math.sqrt(3)
    got = report.paired_interval([0.01, 0.03, 0.02])
    assert got["n"] == 3
    assert got["mean"] == pytest.approx(0.02)
    assert (got["low"], got["high"]) == pytest.approx((0.02 - half, 0.02 + half))
    assert math.isnan(report.paired_interval([0.5])["low"])
    # per split, the train seeds are averaged before the difference is taken
    runs = [{"data_seed": s, "test": {"recall@20": v}} for s, v in
            [(1, 0.30), (1, 0.32), (2, 0.40), (2, 0.42), (3, 0.20), (3, 0.20)]]
    base = [{"data_seed": s, "test": {"recall@20": v}} for s, v in
            [(1, 0.30), (2, 0.38), (2, 0.40), (3, 0.21), (4, 0.9)]]
    diff = report.paired_difference(runs, base, "recall@20")
    assert diff["splits"] == pytest.approx({1: 0.01, 2: 0.02, 3: -0.01})  # split 4 unpaired
    d = [0.01, 0.02, -0.01]
    half = 4.303 * statistics.stdev(d) / math.sqrt(3)
    assert (diff["low"], diff["high"]) == pytest.approx((statistics.fmean(d) - half,
                                                         statistics.fmean(d) + half))


def test_t_table_matches_scipy(load_script):
    stats = pytest.importorskip("scipy.stats")
    report = load_script("experiments/protocol_report.py", "protocol_report")
    for df in range(1, 31):
        assert report.t_quantile(df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-3)
