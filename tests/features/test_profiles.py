"""User-profile prompts, answer parsing, the template backend and item-text reading.

None of these tests needs the text encoder.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recgoat_jax.data.dataset import Dataset, DataError
from recgoat_jax.features.item_text import align_item_texts, read_item_texts
from recgoat_jax.features.llm_backends import TemplateBackend, generate_answers
from recgoat_jax.features.profiles import (MalformedAnswersError, ProfileRequest, extract_answer,
                                           parse_answers, profile_requests,
                                           training_items_by_user)
from tests.conftest import run_features_cli

N_USERS, N_ITEMS = 5, 15
# Fixed-width tokens so that no item's text is a substring of another's.
ITEM_TEXTS = [f"zq{i:03d}x gadget made of {'oak' if i % 2 else 'steel'}" for i in range(N_ITEMS)]


def make_dataset(raw_ids: bool = False) -> Dataset:
    """User u trains on items 3u, 3u+1 (and 3u+2 for even u); u's valid / test are other users'."""
    train, valid, test = [], [], []
    for u in range(N_USERS):
        train += [[u, 3 * u], [u, 3 * u + 1]]
        if u % 2 == 0:
            train.append([u, 3 * u + 2])
        valid.append([u, (3 * u + 3) % N_ITEMS])
        test.append([u, (3 * u + 4) % N_ITEMS])
    extra = {}
    if raw_ids:
        extra = dict(raw_user_ids=np.array([f"U{u}" for u in range(N_USERS)]),
                     raw_item_ids=np.array([f"I{i}" for i in range(N_ITEMS)]))
    return Dataset(name="tiny-text", n_users=N_USERS, n_items=N_ITEMS,
                   train=np.array(train, dtype=np.int32), valid=np.array(valid, dtype=np.int32),
                   test=np.array(test, dtype=np.int32), item_features={}, source="test", **extra)


# --- prompts -----------------------------------------------------------------------------------

def test_prompts_hold_every_training_item_and_no_valid_or_test_item():
    ds = make_dataset()
    requests, without = profile_requests(ds, ITEM_TEXTS, max_items=0, max_chars=0)
    assert without == []
    assert [r.user for r in requests] == list(range(N_USERS))
    for r in requests:
        train_items = set(ds.train[ds.train[:, 0] == r.user, 1].tolist())
        held_out = set(ds.valid[ds.valid[:, 0] == r.user, 1].tolist()) | \
            set(ds.test[ds.test[:, 0] == r.user, 1].tolist())
        assert set(r.items) == train_items
        for i in train_items:
            assert ITEM_TEXTS[i] in r.prompt
        for i in held_out:
            assert ITEM_TEXTS[i] not in r.prompt, f"user {r.user}: held-out item {i} leaked"
        for part in ("category, function, style, material, usage scenario", "price range",
                     "Style & Aesthetics", "Function & Usability", "Context & Emotion",
                     "brand loyalty, price sensitivity, sustainability",
                     "<think>...</think><answer>...</answer>"):
            assert part in r.prompt


def test_prompts_cap_items_and_skip_users_without_text():
    ds = make_dataset()
    texts = list(ITEM_TEXTS)
    texts[0] = texts[1] = None  # user 0 trains on 0, 1, 2 -> keeps item 2 only
    texts[3] = texts[4] = None  # user 1 trains on 3, 4 -> no text left
    requests, without = profile_requests(ds, texts, max_items=1, max_chars=10)
    assert without == [1]
    by_user = {r.user: r for r in requests}
    assert by_user[0].items == (2,)
    assert by_user[2].items == (8,)  # the last of 6, 7, 8 in train order
    assert all(len(t) <= 10 for r in requests for t in r.item_texts)


def test_training_items_follow_train_order_per_user():
    ds = make_dataset()
    per_user = training_items_by_user(ds)
    assert [p.tolist() for p in per_user[:2]] == [[0, 1, 2], [3, 4]]


def test_prompt_records_carry_raw_user_ids():
    ds = make_dataset(raw_ids=True)
    requests, _ = profile_requests(ds, ITEM_TEXTS)
    record = requests[3].to_json()
    assert record["user"] == 3 and record["user_raw"] == "U3"
    assert "user_raw" not in profile_requests(make_dataset(), ITEM_TEXTS)[0][0].to_json()


# --- answers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("<think>hmm</think><answer> likes oak </answer>", "likes oak"),
    ("<think>try <answer>draft</answer></think>\n<answer>final</answer>", "final"),
    ("<answer>a</answer> then <answer>b</answer>", "b"),
    ("<ANSWER>upper</ANSWER>", "upper"),
])
def test_extract_answer_takes_the_answer_after_thinking(text, expected):
    assert extract_answer(text) == (expected, "")


@pytest.mark.parametrize("text", ["<think>only thinking</think>", "<answer>  </answer>",
                                  "<think>x <answer>inside</answer></think>", "<answer>open",
                                  None])
def test_extract_answer_rejects_malformed(text):
    answer, why = extract_answer(text)
    assert answer is None and why


def _write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_malformed_answers_are_reported_by_user_id(tmp_path):
    ds = make_dataset(raw_ids=True)
    path = _write_jsonl(tmp_path / "answers.jsonl", [
        {"user": 0, "text": "<think>t</think><answer>profile zero</answer>"},
        {"user_raw": "U1", "text": "no tags at all"},
        {"user": 2, "user_raw": "U2", "text": "<answer>profile two</answer>"},
        {"user": 3, "answer": "<answer>wrong field</answer>"},
        {"user_raw": "U4", "text": "<think>cut off"},
    ])
    with pytest.raises(MalformedAnswersError) as err:
        parse_answers(path, ds)
    assert sorted(err.value.users) == [1, 3, 4]
    message = str(err.value)
    for label in ("user 1 (raw 'U1')", "user 3 (raw 'U3')", "user 4 (raw 'U4')"):
        assert label in message
    assert "user 0" not in message and "user 2" not in message

    parsed = parse_answers(path, ds, on_malformed="skip")
    assert parsed.texts == ["profile zero", None, "profile two", None, None]
    assert sorted(parsed.malformed) == [1, 3, 4]


@pytest.mark.parametrize("records, fragment", [
    ([{"user": 0, "text": "<answer>a</answer>"}, {"user": 0, "text": "<answer>b</answer>"}],
     "already answered on line 1"),
    ([{"user": 99, "text": "<answer>a</answer>"}], "0..4"),
    ([{"user_raw": "U9", "text": "<answer>a</answer>"}], "'U9' is not in dataset"),
    ([{"user": 1, "user_raw": "U2", "text": "<answer>a</answer>"}], "disagree"),
    ([{"text": "<answer>a</answer>"}], "'user'"),
])
def test_bad_answer_records_name_the_line(tmp_path, records, fragment):
    path = _write_jsonl(tmp_path / "answers.jsonl", records)
    with pytest.raises(DataError, match=fragment) as err:
        parse_answers(path, make_dataset(raw_ids=True))
    assert f"answers.jsonl:{len(records)}" in str(err.value)


# --- template backend --------------------------------------------------------------------------

def _request(texts) -> ProfileRequest:
    return ProfileRequest(0, None, tuple(range(len(texts))), tuple(texts), "unused")


def test_template_backend_is_deterministic_and_well_formed():
    texts = ["Red oak chair for the garden", "Oak table, garden furniture", "Steel lamp"]
    backend = TemplateBackend()
    first = backend.complete(_request(texts))
    assert first == backend.complete(_request(texts))
    assert first == backend.complete(_request(texts[::-1]))  # item order does not matter
    answer, why = extract_answer(first)
    assert why == ""
    # 'garden' and 'oak' are in 2 of 3 items, more than any other word; ties go alphabetically.
    assert answer.startswith("Shared attributes: garden, oak, chair.")
    assert "garden (2/3), oak (2/3)" in first


def test_template_backend_does_not_depend_on_hash_seed():
    code = ("from recgoat_jax.features.llm_backends import TemplateBackend\n"
            "from recgoat_jax.features.profiles import ProfileRequest\n"
            "texts = ('alpha beta gamma delta', 'epsilon zeta eta theta', 'iota kappa lambda')\n"
            "print(TemplateBackend().complete(ProfileRequest(0, None, (0, 1, 2), texts, '')))\n")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
               for seed in ("1", "2", "3")}
    assert len(outputs) == 1


def test_template_generation_gives_one_parsable_answer_per_user(tmp_path):
    ds = make_dataset()
    requests, _ = profile_requests(ds, ITEM_TEXTS)
    out = tmp_path / "answers.jsonl"
    report = generate_answers(requests, TemplateBackend(), out, workers=1, progress=False)
    assert report.failed == {} and sorted(report.answered) == list(range(N_USERS))
    parsed = parse_answers(out, ds)
    assert all(t for t in parsed.texts)
    # user 1 trains on items 3 (oak) and 4 (steel): both words in 1 of 2 items
    assert "oak (1/2)" in out.read_text().splitlines()[1]


# --- item texts --------------------------------------------------------------------------------

def test_read_tsv_jsonl_and_recbole_item_texts(tmp_path):
    tsv = tmp_path / "items.tsv"
    tsv.write_text("item_id\ttext\n2\tthird\titem\n0\tfirst item\n")
    assert read_item_texts(tsv) == {"2": "third\titem", "0": "first item"}

    jsonl = tmp_path / "items.jsonl"
    _write_jsonl(jsonl, [{"asin": "B1", "title": "one"}, {"asin": "B2", "title": None}])
    assert read_item_texts(jsonl, id_field="asin", text_field="title") == {"B1": "one", "B2": ""}

    item = tmp_path / "ml.item"
    item.write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                    "7\tToy Story\t1995\tAnimation Comedy\n8\tHeat\t1995\t\n")
    assert read_item_texts(item) == {"7": "Toy Story. Animation Comedy", "8": "Heat"}
    assert read_item_texts(item, text_fields=["class"]) == {"7": "Animation Comedy", "8": ""}


@pytest.mark.parametrize("name, content, fragment", [
    ("a.tsv", "1\tx\n1\ty\n", "a.tsv:2: item id '1' appears again"),
    ("a.tsv", "1\tx\n2 y\n", "a.tsv:2: expected 'item_id<TAB>text'"),
    ("a.jsonl", '{"item_id": 1, "text": "x"}\n{"item_id": 2\n', "a.jsonl:2: not valid JSON"),
    ("a.jsonl", '{"item_id": 1}\n', "a.jsonl:1: missing field 'text'"),
    ("a.item", "item_id:token\tname:token_seq\n1\tx\textra\n", "a.item:2: 3 tab-separated"),
    ("a.item", "id:token\tname:token_seq\n", "a.item:1: no 'item_id' field in the header"),
    ("a.csv", "1,x\n", "cannot tell the item-text format"),
])
def test_bad_item_text_files_name_file_and_line(tmp_path, name, content, fragment):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=fragment.replace("(", r"\(")):
        read_item_texts(tmp_path / name)


def test_align_item_texts_by_raw_or_dense_ids():
    ds_raw = make_dataset(raw_ids=True)
    with pytest.warns(UserWarning, match="1 item ids"):
        aligned = align_item_texts({"I3": "three", "I0": "zero", "gone": "x", "I5": " "}, ds_raw)
    assert aligned[:6] == ["zero", None, None, "three", None, None]
    ds = make_dataset()
    assert align_item_texts({"14": "last"}, ds)[14] == "last"
    with pytest.raises(DataError, match="'I3' is not an integer"):
        align_item_texts({"I3": "three"}, ds)


# --- command line (dataset injected; no encoder needed) ------------------------------------------

def test_cli_prompts_then_template_generate(tmp_path, capsys):
    ds = make_dataset(raw_ids=True)
    texts = tmp_path / "items.tsv"
    texts.write_text("".join(f"I{i}\t{t}\n" for i, t in enumerate(ITEM_TEXTS)))
    prompts, answers = tmp_path / "prompts.jsonl", tmp_path / "answers.jsonl"
    assert run_features_cli(["profiles", "prompts", "--item-text", str(texts), "--out", str(prompts)],
                    ds) == 0
    records = [json.loads(line) for line in prompts.read_text().splitlines()]
    assert [(r["user"], r["user_raw"]) for r in records] == [(u, f"U{u}") for u in range(N_USERS)]
    assert ITEM_TEXTS[0] in records[0]["prompt"] and ITEM_TEXTS[3] not in records[0]["prompt"]
    argv = ["profiles", "generate", "--item-text", str(texts), "--out", str(answers), "--quiet"]
    assert run_features_cli(argv, ds) == 0
    assert len(parse_answers(answers, ds).texts) == N_USERS
    before = answers.read_bytes()
    assert run_features_cli(argv, ds) == 0  # rerun: everything kept, nothing regenerated
    assert answers.read_bytes() == before
    assert "5 answers kept from before, 0 new" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["answers.jsonl", "items.tsv", "prompts.jsonl"]
