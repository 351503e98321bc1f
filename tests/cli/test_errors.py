"""Every mistake a user can make on the command line ends as ONE line
`recgoat-jax: error: ...` with exit code 2, before any work, and writes nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

QUICK = ["--set", "train.epochs=1", "--quiet"]


def assert_one_line_error(code, err, *words):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("recgoat-jax: error: ")
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.mark.parametrize("override, words", [
    ("model.name=lightgnc", ["model.name", "lightgcn"]),
    ("eval.protocol=mmrc", ["eval.protocol", "mmrec"]),
    ("loss.contrastive=cmc", ["loss.contrastive", "cmcl"]),
    ("eval.every=-1", ["eval.every", ">= 0"]),
    ("train.batch_size=0", ["train.batch_size", ">= 1"]),
    ("train.batch_size=-8", ["train.batch_size", ">= 1"]),
    ("model.dim=0", ["model.dim", ">= 1"]),
    ("train.lr=0", ["train.lr", "> 0"]),
    ("train.lr=-1e-3", ["train.lr", "> 0"]),
    ("loss.decay=-1e-4", ["loss.decay", ">= 0"]),
    ("train.epochs=0", ["train.epochs", ">= 1"]),
    ("eval.ks=[5, 10]", ["eval.ks", "20"]),
    ("eval.metric=recall@30", ["eval.metric", "30", "eval.ks"]),
    ("eval.metric=mrr@20", ["eval.metric", "recall"]),
    ("model.oat.solver=sinkhorn", ["model.oat.solver", "ott"]),
    ("model.oat.plan_grad=implicit", ["model.oat.plan_grad", "ott"]),  # reference solver
])
def test_bad_values_are_refused_when_the_config_loads(run_cli, tmp_path, override, words):
    out = tmp_path / "run"
    code, _, err = run_cli("train", "--config", "recgoat-reference", "--preset", "tiny",
                           "--out", out, *QUICK, "--set", override)
    assert_one_line_error(code, err, *words)
    assert not out.exists()


def test_config_errors_come_before_any_data_is_read(run_cli, tmp_path):
    # the data folder does not exist: the config error must win
    code, _, err = run_cli("train", "--data-format", "mmrec", "--data-path", tmp_path / "no",
                           "--out", tmp_path / "run", "--set", "model.name=lightgnc")
    assert_one_line_error(code, err, "model.name")


def test_unknown_modality_names_what_the_data_has(run_cli, tmp_path):
    code, _, err = run_cli("train", "--config", "recgoat", "--preset", "tiny", "--out",
                           tmp_path / "run", "--set", "model.modalities=['txt']", *QUICK)
    assert_one_line_error(code, err, "model.modalities", "txt", "text")
    assert not (tmp_path / "run").exists()


def test_knn_k_must_be_below_the_number_of_items(run_cli, tmp_path):
    code, _, err = run_cli("train", "--config", "recgoat", "--preset", "tiny", "--out",
                           tmp_path / "run", "--set", "model.knn_k=45", *QUICK)
    assert_one_line_error(code, err, "model.knn_k", "45 in")
    assert not (tmp_path / "run").exists()


def test_a_dataset_with_20_items_under_the_default_knn_k(run_cli, tmp_path):
    from recgoat_jax.data import Dataset
    rng = np.random.default_rng(0)
    pairs = np.array([(u, i) for u in range(12) for i in range(20) if (u + i) % 3 == 0])
    rng.shuffle(pairs)
    ds = Dataset("few", 12, 20, pairs[:-24].astype(np.int32), pairs[-24:-12].astype(np.int32),
                 pairs[-12:].astype(np.int32),
                 item_features={"text": rng.standard_normal((20, 4)).astype(np.float32)})
    from tests.conftest import write_mmrec_dataset
    folder = write_mmrec_dataset(tmp_path / "few", ds)
    code, _, err = run_cli("train", "--config", "recgoat", "--data-path", folder,
                           "--out", tmp_path / "run", *QUICK)
    assert_one_line_error(code, err, "model.knn_k = 20", "20 in")


def test_recgoat_on_data_without_feature_files(run_cli, tiny_mmrec, tmp_path):
    folder = tiny_mmrec(features=False)
    code, _, err = run_cli("train", "--config", "recgoat", "--data-path", folder,
                           "--out", tmp_path / "run", *QUICK)
    assert_one_line_error(code, err, "recgoat", "feature files")
    assert not (tmp_path / "run").exists()


def test_feature_file_with_no_columns_names_the_file(run_cli, tiny_mmrec, tmp_path):
    folder = tiny_mmrec()
    np.save(folder / "image_feat.npy", np.zeros((45, 0), np.float32))
    code, _, err = run_cli("train", "--config", "recgoat", "--data-path", folder,
                           "--out", tmp_path / "run", *QUICK)
    assert_one_line_error(code, err, "image_feat.npy", "(45, 0)")


def test_mmrec_protocol_needs_valid_interactions(run_cli, tiny_mmrec, tmp_path):
    folder = tiny_mmrec(valid=False)
    code, _, err = run_cli("train", "--config", "lightgcn", "--data-path", folder,
                           "--out", tmp_path / "run", *QUICK)
    assert_one_line_error(code, err, "eval.protocol = 'mmrec'", "valid", "reference")
    assert not (tmp_path / "run").exists()


def test_config_naming_a_folder(run_cli, tmp_path):
    code, _, err = run_cli("train", "--config", tmp_path, "--preset", "tiny",
                           "--out", tmp_path / "run")
    assert_one_line_error(code, err, "--config", "is a folder")
    code, _, err = run_cli("train", "--config", "recgaot", "--out", tmp_path / "run")
    assert_one_line_error(code, err, "not found", "recgoat")


def _unwritable_folder(tmp_path) -> Path:
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    if Path("/sys").is_dir():
        return Path("/sys")  # sysfs: no file can be created there, not even by root
    pytest.skip("no read-only folder for root on this machine")


def test_read_only_out_is_refused_before_any_work(run_cli, tmp_path):
    folder = _unwritable_folder(tmp_path)
    code, _, err = run_cli("train", "--config", "lightgcn", "--preset", "tiny",
                           "--out", folder / "run", *QUICK)
    assert_one_line_error(code, err, "--out", "cannot write")
    assert not (folder / "run").exists()
    (tmp_path / "file").write_text("x")
    code, _, err = run_cli("train", "--preset", "tiny", "--out", tmp_path / "file", *QUICK)
    assert_one_line_error(code, err, "--out", "is a file")


def test_evaluate_params_given_a_folder_or_a_result_json(run_cli, tmp_path):
    (tmp_path / "ckpt").mkdir()
    code, _, err = run_cli("evaluate", "--preset", "tiny", "--params", tmp_path / "ckpt")
    assert_one_line_error(code, err, "--params", "is a folder", "--run")
    (tmp_path / "result.json").write_text(json.dumps({"best_epoch": 3}))
    code, _, err = run_cli("evaluate", "--preset", "tiny", "--params",
                           tmp_path / "result.json")
    assert_one_line_error(code, err, "result.json", "not a .npz")
    code, _, err = run_cli("evaluate", "--run", tmp_path / "ckpt")
    assert_one_line_error(code, err, "--run", "config.toml")


def test_convert_given_a_text_file_or_unknown_keys(run_cli, tmp_path):
    torch = pytest.importorskip("torch")
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    code, _, err = run_cli("convert", "--to", "jax", text, tmp_path / "p.npz")
    assert_one_line_error(code, err, "notes.txt", "not a torch state_dict")
    sd = {"embedding_user.weight": torch.zeros(3, 2), "embedding_item.weight": torch.zeros(4, 2),
          "cf.extra_head.weight": torch.zeros(2, 2)}
    torch.save(sd, tmp_path / "odd.pt")
    code, _, err = run_cli("convert", "--to", "jax", tmp_path / "odd.pt", tmp_path / "p.npz")
    assert_one_line_error(code, err, "odd.pt")
    code, _, err = run_cli("convert", "--to", "torch", text, tmp_path / "p.pt")
    assert_one_line_error(code, err, "notes.txt", "not a .npz")
    assert not (tmp_path / "p.npz").exists() and not (tmp_path / "p.pt").exists()


def test_data_path_without_format_is_detected_or_refused(run_cli, tiny_mmrec, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli("train", "--config", "lightgcn", "--data-path", tmp_path / "empty",
                           "--out", tmp_path / "run", *QUICK)
    assert_one_line_error(code, err, "cannot tell the data format", "--data-format")
    assert not (tmp_path / "run").exists()
