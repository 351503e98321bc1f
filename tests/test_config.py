import tomllib

import pytest

from recgoat_jax import config as C
from tests.conftest import CONFIGS


def test_overrides_nested_and_typed():
    cfg = C.load(None, ["model.name=recgoat", "model.oat.solver=ott", "train.lr=1e-3",
                        "eval.ks=[5, 20]", "train.epochs=3"])
    assert cfg.model.name == "recgoat" and cfg.model.oat.solver == "ott"
    assert cfg.train.lr == 1e-3 and cfg.train.epochs == 3 and cfg.eval.ks == (5, 20)


def test_dump_round_trip():
    cfg = C.load(None, ["model.oat.epsilon=0.05", "model.modalities=['text']", "loss.ot_weight=1"])
    assert C.from_dict(tomllib.loads(C.dumps(cfg))) == cfg


@pytest.mark.parametrize("override, words", [
    ("train.lrr=1", ["train.lrr", "lr"]),
    ("train.lr=abc", ["train.lr", "float"]),
    ("train.epochs=1.5", ["train.epochs", "int"]),
    ("model.oat=3", ["model.oat", "table"]),
    ("nonsense", ["section.key=value"]),
])
def test_bad_overrides_name_the_key(override, words):
    with pytest.raises(C.ConfigError) as e:
        C.load(None, [override])
    for w in words:
        assert w in str(e.value)


def test_bad_file_names_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[train]\nepochs = = 3\n")
    with pytest.raises(C.ConfigError, match="bad.toml"):
        C.load(path)
    with pytest.raises(C.ConfigError, match="not found"):
        C.load(tmp_path / "missing.toml")


def test_every_shipped_config_loads():
    configs = sorted(CONFIGS.glob("*.toml"))
    assert configs
    for path in configs:
        C.load(path)


def test_a_stored_config_missing_a_later_setting_matches_at_its_default():
    """config.same_stored_config: the rule sweep plans and sweep checkpoints resume by."""
    import json

    wanted = json.loads(json.dumps(C.to_dict(C.RunConfig())))
    stored = json.loads(json.dumps(wanted))
    del stored["loss"]["infonce_distinct"]  # written before the setting existed
    assert C.same_stored_config(stored, wanted)
    wanted["loss"]["infonce_distinct"] = False  # not its default: a different run
    assert not C.same_stored_config(stored, wanted)
    wanted["loss"]["infonce_distinct"] = True
    stored["train"]["lr"] = 5e-3  # a real difference
    assert not C.same_stored_config(stored, wanted)
