"""Readers (MMRec, LightGCN, RecBole), the per-user split and `load_dataset`."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from recgoat_jax.config import ConfigError, DataConfig
from recgoat_jax.data import (DataError, load_dataset, read_lightgcn, read_mmrec, read_recbole,
                              read_recbole_items, split_per_user)

# A small problem: 5 users, 6 items; user 4 has only a test pair (cold).
TRAIN = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 3), (2, 4), (3, 5), (3, 0)]
VALID = [(0, 3), (1, 5)]
TEST = [(0, 4), (2, 1), (3, 2)]


def pairs_set(a) -> set[tuple[int, int]]:
    return {(int(u), int(i)) for u, i in np.asarray(a).reshape(-1, 2)}


def write_mmrec(folder, name="toy", columns=("userID", "itemID", "rating", "timestamp",
                                             "x_label"), splits=(TRAIN, VALID, TEST), extra=""):
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(columns)]
    for label, pairs in enumerate(splits):
        for t, (u, i) in enumerate(pairs):
            row = {"userID": u, "itemID": i, "rating": "5.0", "timestamp": 1000 + t,
                   "x_label": label}
            lines.append("\t".join(str(row[c]) for c in columns))
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n" + extra)
    return folder


def write_lightgcn(folder, files=None):
    folder.mkdir(parents=True, exist_ok=True)
    for fname, text in (files or {"train.txt": "0 0 1 2\n1 1 3\n2 4\n3 5 0\n",
                                  "valid.txt": "0 3\n1 5\n",
                                  "test.txt": "0 4\n2 1\n3 2\n"}).items():
        (folder / fname).write_text(text)
    return folder


# ----------------------------------------------------------------------------- MMRec

def test_mmrec_round_trip_with_features(tmp_path):
    folder = write_mmrec(tmp_path / "toy")
    rng = np.random.default_rng(0)
    text = rng.standard_normal((6, 4)).astype(np.float32)
    image = rng.random((6, 5))  # float64 on disk: read as float32
    user = rng.standard_normal((4, 3)).astype(np.float32)
    np.save(folder / "text_feat.npy", text)
    np.save(folder / "image_feat.npy", image)
    np.save(folder / "user_text_feat.npy", user)
    ds = read_mmrec(folder)
    assert (ds.name, ds.n_users, ds.n_items) == ("toy", 4, 6)
    assert pairs_set(ds.train) == set(TRAIN)
    assert pairs_set(ds.valid) == set(VALID)
    assert pairs_set(ds.test) == set(TEST)
    assert set(ds.item_features) == {"text", "image"}
    np.testing.assert_array_equal(ds.item_features["text"], text)
    np.testing.assert_allclose(ds.item_features["image"], image.astype(np.float32))
    assert ds.item_features["image"].dtype == np.float32
    np.testing.assert_array_equal(ds.user_features["text"], user)
    assert ds.raw_item_ids is None


def test_mmrec_column_order_does_not_matter(tmp_path):
    a = read_mmrec(write_mmrec(tmp_path / "a", name="a"))
    b = read_mmrec(write_mmrec(tmp_path / "b", name="b",
                               columns=("x_label", "timestamp", "itemID", "rating", "userID")))
    for split in ("train", "valid", "test"):
        assert pairs_set(getattr(a, split)) == pairs_set(getattr(b, split))
    assert (a.n_users, a.n_items) == (b.n_users, b.n_items)


def test_mmrec_dataset_name_resolution(tmp_path):
    folder = write_mmrec(tmp_path / "folder", name="only")
    assert read_mmrec(folder).name == "only"  # the only *.inter
    write_mmrec(folder, name="second")
    with pytest.raises(DataError, match=r"exactly one \*\.inter"):
        read_mmrec(folder)
    assert read_mmrec(folder, "second").name == "second"
    with pytest.raises(DataError, match=r"missing\.inter: file not found"):
        read_mmrec(folder, "missing")
    with pytest.raises(DataError, match="data folder not found"):
        read_mmrec(tmp_path / "nowhere")


def test_mmrec_features_may_add_items_without_interactions(tmp_path):
    folder = write_mmrec(tmp_path / "toy")
    np.save(folder / "text_feat.npy", np.ones((9, 2), np.float32))
    np.save(folder / "image_feat.npy", np.ones((9, 3), np.float32))
    assert read_mmrec(folder).n_items == 9


def test_mmrec_drops_cold_eval_users_with_counted_warning(tmp_path):
    folder = write_mmrec(tmp_path / "toy", splits=(TRAIN, VALID, TEST + [(4, 0), (4, 3)]))
    with pytest.warns(UserWarning, match=r"dropped 2 'test' pairs of 1 users"):
        ds = read_mmrec(folder)
    assert ds.n_users == 5 and pairs_set(ds.test) == set(TEST)


def test_mmrec_repeated_pair_in_one_split_is_dropped_with_warning(tmp_path):
    folder = write_mmrec(tmp_path / "toy", splits=(TRAIN + [(0, 1)], VALID, TEST))
    with pytest.warns(UserWarning, match=r"dropped 1 repeated .* \(first at line 10\)"):
        ds = read_mmrec(folder)
    assert len(ds.train) == len(TRAIN)


@pytest.mark.parametrize("extra, message", [
    ("0\t1\t5.0\n", r"toy\.inter line 15: 3 fields: expected 5"),
    ("0\tx7\t5.0\t1\t0\n", r"toy\.inter line 15: itemID is 'x7': expected an integer id"),
    ("-2\t1\t5.0\t1\t0\n", r"toy\.inter line 15: userID is -2: expected an id >= 0"),
    ("0\t5\t5.0\t1\t3\n", r"toy\.inter line 15: x_label is '3': expected 0 \(train\), 1"),
    ("3\t5\t5.0\t1\t2\n", r"toy\.inter line 8 and toy\.inter line 15: the pair \(user 3, "
                          r"item 5\) is in both 'train' and 'test'"),
])
def test_mmrec_malformed_lines_name_file_and_line(tmp_path, extra, message):
    folder = write_mmrec(tmp_path / "toy", extra=extra)  # header + 13 pairs: extra is line 15
    with pytest.raises(DataError, match=message):
        read_mmrec(folder)


def test_mmrec_header_must_name_the_columns(tmp_path):
    folder = write_mmrec(tmp_path / "toy")
    inter = folder / "toy.inter"
    inter.write_text(inter.read_text().replace("itemID", "item", 1))
    with pytest.raises(DataError, match=r"toy\.inter line 1: .* no 'itemID' column"):
        read_mmrec(folder)


def test_mmrec_empty_training_split(tmp_path):
    folder = write_mmrec(tmp_path / "toy", splits=([], VALID, TEST))
    with pytest.raises(DataError, match=r"toy\.inter: no training .* split is empty"):
        read_mmrec(folder)


def test_feature_rows_fewer_than_items_name_the_file(tmp_path):
    folder = write_mmrec(tmp_path / "toy")
    np.save(folder / "text_feat.npy", np.ones((4, 2), np.float32))
    with pytest.raises(DataError, match=r"text_feat\.npy: 4 rows: expected one row per item, 6 "
                                        r"rows \(item ids go up to 5, at toy\.inter line 8\)"):
        read_mmrec(folder)


def test_feature_files_disagreeing_on_rows_name_the_file(tmp_path):
    folder = write_mmrec(tmp_path / "toy")
    np.save(folder / "text_feat.npy", np.ones((9, 2), np.float32))
    np.save(folder / "image_feat.npy", np.ones((7, 2), np.float32))
    with pytest.raises(DataError, match=r"image_feat\.npy: 7 rows: expected 9 rows \(as "
                                        r"text_feat\.npy\)"):
        read_mmrec(folder)


def test_user_feature_rows_checked_too(tmp_path):
    folder = write_mmrec(tmp_path / "toy")
    np.save(folder / "user_text_feat.npy", np.ones((2, 2), np.float32))
    with pytest.raises(DataError, match=r"user_text_feat\.npy: 2 rows: expected one row per "
                                        r"user, 4 rows"):
        read_mmrec(folder)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_features_name_file_row_and_column(tmp_path, bad):
    folder = write_mmrec(tmp_path / "toy")
    x = np.ones((6, 3), np.float32)
    x[4, 2] = bad
    np.save(folder / "image_feat.npy", x)
    with pytest.raises(DataError, match=r"image_feat\.npy: NaN/Inf at row 4, column 2"):
        read_mmrec(folder)


def test_feature_file_must_be_2d_numbers(tmp_path):
    folder = write_mmrec(tmp_path / "toy")
    np.save(folder / "text_feat.npy", np.ones(6, np.float32))
    with pytest.raises(DataError, match=r"text_feat\.npy: shape \(6,\): expected a 2-D array"):
        read_mmrec(folder)


# ----------------------------------------------------------------------------- LightGCN

def test_lightgcn_round_trip(tmp_path):
    folder = write_lightgcn(tmp_path / "lg")
    np.save(folder / "text_feat.npy", np.ones((6, 2), np.float32))
    ds = read_lightgcn(folder)
    assert (ds.n_users, ds.n_items) == (4, 6)
    assert pairs_set(ds.train) == set(TRAIN)
    assert pairs_set(ds.valid) == set(VALID)
    assert pairs_set(ds.test) == set(TEST)
    assert set(ds.item_features) == {"text"}


def test_lightgcn_valid_is_optional_and_user_only_lines_count(tmp_path):
    folder = write_lightgcn(tmp_path / "lg", {"train.txt": "0 1 1 2\n7\n\n2 0\n",
                                              "test.txt": "0 3\n2 2\n"})
    ds = read_lightgcn(folder)
    assert ds.n_users == 8  # user 7 has a line but no item
    assert len(ds.valid) == 0
    assert pairs_set(ds.train) == {(0, 1), (0, 2), (2, 0)}  # duplicate item 1 dropped


def test_lightgcn_errors_name_file_and_line(tmp_path):
    folder = write_lightgcn(tmp_path / "lg", {"train.txt": "0 1\n1 2 3.5\n", "test.txt": "0 2\n"})
    with pytest.raises(DataError, match=r"train\.txt line 2: item id is '3\.5': expected an "
                                        r"integer id"):
        read_lightgcn(folder)
    write_lightgcn(folder, {"train.txt": "0 1\n1 2\n", "test.txt": "0 2\n1 -1\n"})
    with pytest.raises(DataError, match=r"test\.txt line 2: item id is -1: expected an id >= 0"):
        read_lightgcn(folder)
    write_lightgcn(folder, {"train.txt": "0 1\n1 2\n", "test.txt": "0 2\n1 2\n"})
    with pytest.raises(DataError, match=r"train\.txt line 2 and test\.txt line 2: the pair "
                                        r"\(user 1, item 2\) is in both 'train' and 'test'"):
        read_lightgcn(folder)
    write_lightgcn(folder, {"train.txt": "0\n1\n", "test.txt": "0 2\n"})
    with pytest.raises(DataError, match=r"train\.txt: no training .* empty"):
        read_lightgcn(folder)
    (folder / "test.txt").unlink()
    write_lightgcn(folder, {"train.txt": "0 1\n"})
    with pytest.raises(DataError, match=r"test\.txt: file not found"):
        read_lightgcn(folder)


# ----------------------------------------------------------------------------- split

def test_split_rule_counts_per_user():
    sizes = {0: 2, 1: 3, 2: 9, 3: 10, 4: 14, 5: 15, 6: 40}
    pairs = np.array([(u, i) for u, n in sizes.items() for i in range(n)])
    train, valid, test = split_per_user(pairs, 7, seed=1)
    expected_eval = {0: 0, 1: 1, 2: 1, 3: 1, 4: 1, 5: 2, 6: 4}
    for u, n in sizes.items():
        n_valid, n_test = (int((s[:, 0] == u).sum()) for s in (valid, test))
        assert n_valid == n_test == expected_eval[u], u
        assert int((train[:, 0] == u).sum()) == n - 2 * expected_eval[u]
    everything = np.concatenate([train, valid, test])
    assert pairs_set(everything) == pairs_set(pairs) and len(everything) == len(pairs)
    assert all(s.dtype == np.int32 for s in (train, valid, test))


def test_split_is_deterministic_and_order_free():
    rng = np.random.default_rng(0)
    pairs = np.array([(u, i) for u in range(30) for i in rng.choice(50, 12, replace=False)])
    a = split_per_user(pairs, 30, seed=7)
    b = split_per_user(pairs[rng.permutation(len(pairs))], 30, seed=7)
    c = split_per_user(pairs, 30, seed=8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert pairs_set(a[2]) != pairs_set(c[2])


# ----------------------------------------------------------------------------- RecBole

RECBOLE_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def write_recbole(folder, rows, name="rb", header=RECBOLE_HEADER):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.inter").write_text(
        header + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    return folder


def recbole_rows():
    rows = [("u9", f"m{i}", 4, 100 + i) for i in range(12)]  # 12 items: 1 valid, 1 test
    rows += [("alice", f"m{i}", 3, 200 + i) for i in (3, 20, 21, 22, 23)]  # 5: 1 valid, 1 test
    rows += [("bob", "m0", 5, 1), ("bob", "m20", 5, 2)]  # 2: all train
    return rows


def test_recbole_remaps_tokens_by_first_appearance(tmp_path):
    folder = write_recbole(tmp_path / "rb", recbole_rows())
    ds = read_recbole(folder, seed=3)
    assert ds.raw_user_ids.tolist() == ["u9", "alice", "bob"]
    assert ds.raw_item_ids.tolist()[:3] == ["m0", "m1", "m2"]
    assert ds.raw_item_ids.tolist()[12:] == ["m20", "m21", "m22", "m23"]
    assert (ds.n_users, ds.n_items) == (3, 16)
    raw = {(ds.raw_user_ids[u], ds.raw_item_ids[i])
           for split in (ds.train, ds.valid, ds.test) for u, i in split}
    assert raw == {(r[0], r[1]) for r in recbole_rows()}
    per_user = {name: [int((s[:, 0] == u).sum()) for s in (ds.train, ds.valid, ds.test)]
                for u, name in enumerate(ds.raw_user_ids)}
    assert per_user == {"u9": [10, 1, 1], "alice": [3, 1, 1], "bob": [2, 0, 0]}


def test_recbole_split_depends_only_on_seed(tmp_path):
    rows = [(f"u{u}", f"i{(u * 7 + k) % 40}", 1, k) for u in range(20) for k in range(11)]
    folder = write_recbole(tmp_path / "rb", rows)
    a, b, c = (read_recbole(folder, seed=s) for s in (5, 5, 6))
    np.testing.assert_array_equal(a.test, b.test)
    np.testing.assert_array_equal(a.train, b.train)
    assert pairs_set(a.test) != pairs_set(c.test)


def test_recbole_repeated_pairs_dropped_with_warning(tmp_path):
    folder = write_recbole(tmp_path / "rb", recbole_rows() + [("bob", "m0", 1, 9)])
    with pytest.warns(UserWarning, match=r"rb\.inter: dropped 1 repeated .* line 21"):
        ds = read_recbole(folder)
    assert len(ds.train) + len(ds.valid) + len(ds.test) == len(recbole_rows())


@pytest.mark.parametrize("header, rows, message", [
    ("user_id\titem_id:token\n", [("a", "b")], r"rb\.inter line 1: column 1 is 'user_id': "
                                               r"expected 'name:type'"),
    ("user_id:token\tmovie:token\n", [("a", "b")], r"rb\.inter line 1: no 'item_id' field"),
    (RECBOLE_HEADER, [("a", "b", 1, 1), ("a", "c", 1)], r"rb\.inter line 3: 3 tab-separated "
                                                        r"fields: expected 4"),
    (RECBOLE_HEADER, [("a", "", 1, 1)], r"rb\.inter line 2: item_id is empty"),
    (RECBOLE_HEADER, [], r"rb\.inter: no interactions"),
])
def test_recbole_malformed_input(tmp_path, header, rows, message):
    folder = write_recbole(tmp_path / "rb", rows, header=header)
    with pytest.raises(DataError, match=message):
        read_recbole(folder)


def test_recbole_features_follow_dense_ids(tmp_path):
    folder = write_recbole(tmp_path / "rb", recbole_rows())
    np.save(folder / "text_feat.npy", np.arange(32, dtype=np.float32).reshape(16, 2))
    assert read_recbole(folder).item_features["text"][1].tolist() == [2.0, 3.0]
    np.save(folder / "text_feat.npy", np.ones((17, 2), np.float32))
    with pytest.raises(DataError, match=r"text_feat\.npy: 17 rows: expected 16 rows \(one per "
                                        r"dense item id, in the order of raw_item_ids\)"):
        read_recbole(folder)


def test_recbole_items_by_dense_id(tmp_path):
    folder = write_recbole(tmp_path / "rb", recbole_rows())
    (folder / "rb.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "m20\tToy  Story\t1995\tAnimation Children's Comedy\n"
        "m99\tNot Rated\t2001\tDrama\n"
        "m0\tHeat\t1995\tAction\n")
    ds = read_recbole(folder)
    items = read_recbole_items(folder, "rb", ds)
    assert items == {
        12: {"movie_title": "Toy Story", "release_year": "1995",
             "class": "Animation Children's Comedy"},
        0: {"movie_title": "Heat", "release_year": "1995", "class": "Action"},
    }
    (folder / "rb.item").write_text("item_id:token\ttitle:token_seq\nm0\tA\nm0\tB\n")
    with pytest.raises(DataError, match=r"rb\.item line 3: item 'm0' already listed on line 2"):
        read_recbole_items(folder, None, ds)
    (folder / "rb.item").unlink()
    with pytest.raises(DataError, match=r"rb\.item: file not found"):
        read_recbole_items(folder, "rb", ds)


# ----------------------------------------------------------------------------- load_dataset

def test_load_dataset_dispatches_and_reports_bad_config(tmp_path):
    write_mmrec(tmp_path / "toy")
    ds = load_dataset(DataConfig(format="mmrec", path=str(tmp_path / "toy")))
    assert pairs_set(ds.train) == set(TRAIN)
    write_lightgcn(tmp_path / "lg")
    assert load_dataset(DataConfig(format="lightgcn", path=str(tmp_path / "lg"))).n_items == 6
    write_recbole(tmp_path / "rb", recbole_rows())
    assert load_dataset(DataConfig(format="recbole", path=str(tmp_path / "rb"))).n_users == 3
    assert load_dataset(DataConfig(preset="tiny")).name == "tiny"
    with pytest.raises(ConfigError, match=r"data\.format = 'csv'"):
        load_dataset(DataConfig(format="csv"))
    with pytest.raises(ConfigError, match=r"data\.preset = 'huge'"):
        load_dataset(DataConfig(preset="huge"))
    with pytest.raises(ConfigError, match=r"data\.path is empty"):
        load_dataset(DataConfig(format="mmrec"))
    with pytest.raises(DataError, match=r"folder not found"):
        load_dataset(DataConfig(format="lightgcn", path=str(tmp_path / "none")))


def test_readers_emit_no_warning_on_clean_input(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_mmrec(write_mmrec(tmp_path / "toy"))
        read_lightgcn(write_lightgcn(tmp_path / "lg"))
