"""Which runs a sweep trains: members (one config each), configurations and groups.

A *configuration* is one point of the grid (and of the random samples); a *member* is one
configuration trained on one data split (`data.seed`) with one `train.seed`. Members whose
configs differ only in `PER_MEMBER_KEYS` share every array shape and code path: they form a
*group*, trained as one compiled program (`recgoat_jax.sweep.engine`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np

from recgoat_jax import config as config_lib
from recgoat_jax.config import ConfigError, RunConfig

# Values a member may have on its own inside a group: the seeds, the learning rate and the
# continuous loss / initialisation hyperparameters (models list theirs in Recommender.hyper).
PER_MEMBER_KEYS = ("train.seed", "train.lr", "loss.decay", "loss.cl_weight",
                   "loss.modality_weight", "loss.temperature", "loss.ot_weight",
                   "model.oat.alpha_image", "model.oat.beta_text", "model.oat.other_weight",
                   "model.user_gate_init", "model.feat_dropout", "model.attn_dropout",
                   "model.dropout", "model.oat.epsilon")


class SweepError(ValueError):
    """A sweep that cannot start; the message names the option or key."""


@dataclasses.dataclass(frozen=True)
class Member:
    """One run of a sweep. `settings`: the configuration's own 'key=value' overrides."""

    name: str
    config_id: int
    settings: tuple[str, ...]
    cfg: RunConfig


def parse_grid(items: list[str]) -> list[tuple[str, list]]:
    """``["train.lr=1e-3,3e-3", ...]`` -> [(key, [values...])], keys checked against the
    config table (values are checked when each member's config loads)."""
    grid = []
    for item in items:
        key, _, text = item.partition("=")
        key = key.strip()
        _check_key(key, "--grid")
        values = [config_lib.parse_value(v.strip()) for v in _split_values(text)]
        if not values:
            raise SweepError(f"--grid {item}: no values (expected KEY=V1,V2,...)")
        grid.append((key, values))
    return grid


def parse_random(items: list[str]) -> list[tuple[str, float, float, bool]]:
    """``["train.lr=1e-4:1e-2:log"]`` -> [(key, low, high, log)]; float keys only."""
    out = []
    floats = {k for k, default, _ in config_lib.fields_table() if isinstance(default, float)}
    for item in items:
        key, _, text = item.partition("=")
        key = key.strip()
        _check_key(key, "--random")
        if key not in floats:
            raise SweepError(f"--random {item}: '{key}' is not a float setting (use --grid)")
        parts = text.split(":")
        try:
            low, high = float(parts[0]), float(parts[1])
        except (ValueError, IndexError):
            raise SweepError(f"--random {item}: expected KEY=LOW:HIGH or KEY=LOW:HIGH:log") \
                from None
        log = len(parts) > 2 and parts[2] == "log"
        if len(parts) > 3 or (len(parts) == 3 and not log) or not low < high or \
                (log and low <= 0):
            raise SweepError(f"--random {item}: expected LOW < HIGH (both > 0 with :log)")
        out.append((key, low, high, log))
    return out


def configurations(grid, random, samples: int, seed: int = 0) -> list[tuple[str, ...]]:
    """Every grid point, each combined with `samples` random draws (when --random is given):
    a list of override tuples."""
    points = [tuple(f"{k}={_toml(v)}" for k, v in zip([k for k, _ in grid], values))
              for values in itertools.product(*[vs for _, vs in grid])] or [()]
    if not random:
        return points
    if samples < 1:
        raise SweepError(f"--samples {samples}: expected >= 1 with --random")
    rng = np.random.default_rng(seed)
    out = []
    for point in points:
        for _ in range(samples):
            draws = []
            for key, low, high, log in random:
                x = math.exp(rng.uniform(math.log(low), math.log(high))) if log \
                    else rng.uniform(low, high)
                draws.append(f"{key}={float(f'{x:.6g}')!r}")
            out.append(point + tuple(draws))
    return out


def expand(config: str | None, overrides: list[str], configs: list[tuple[str, ...]],
           seeds: list[int], data_seeds: list[int] | None) -> list[Member]:
    """The members: configs x data seeds x train seeds, each config loaded and checked."""
    if not seeds:
        raise SweepError("--seeds: expected at least one train seed")
    members = []
    for config_id, settings in enumerate(configs):
        for data_seed in data_seeds or [None]:
            for seed in seeds:
                extra = [*settings, f"train.seed={int(seed)}"]
                if data_seed is not None:
                    extra.append(f"data.seed={int(data_seed)}")
                try:
                    cfg = config_lib.load(config, [*overrides, *extra])
                except ConfigError as e:
                    raise SweepError(str(e)) from None
                name = f"c{config_id:02d}" + (f"_data{data_seed}" if data_seed is not None
                                              else "") + f"_seed{seed}"
                members.append(Member(name, config_id, tuple(settings), cfg))
    return members


def group_key(cfg: RunConfig) -> tuple:
    """What must be equal inside a group: the config without the per-member keys (the OT
    loss's weight stays as "on or off", a code path)."""
    flat = config_lib.to_flat_dict(cfg)
    flat["loss.ot_weight"] = flat["loss.ot_weight"] > 0
    return tuple(sorted((k, repr(v)) for k, v in flat.items()
                        if k not in PER_MEMBER_KEYS or k == "loss.ot_weight"))


def groups(members: list[Member], max_size: int = 0) -> list[list[Member]]:
    """Members grouped by `group_key`, in order of first appearance; with `max_size` > 0 a
    larger group is cut into consecutive chunks of at most `max_size` members (trained one
    after the other: less memory, and an interruption loses at most one chunk's work)."""
    out: dict[tuple, list[Member]] = {}
    for m in members:
        out.setdefault(group_key(m.cfg), []).append(m)
    if max_size <= 0:
        return list(out.values())
    return [g[i:i + max_size] for g in out.values() for i in range(0, len(g), max_size)]


def varying_keys(cfgs: list[RunConfig]) -> dict[str, list]:
    """{key: [value per config]} for the keys whose values differ between `cfgs`."""
    flats = [config_lib.to_flat_dict(c) for c in cfgs]
    return {k: [f[k] for f in flats] for k in flats[0]
            if any(f[k] != flats[0][k] for f in flats[1:])}


def _check_key(key: str, option: str) -> None:
    keys = [k for k, _, _ in config_lib.fields_table()]
    if key not in keys:
        close = [k for k in keys if k.split(".")[-1] == key.split(".")[-1]]
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise SweepError(f"{option} {key}: unknown config key{hint}; `recgoat-jax config "
                         "keys` lists them")


def _split_values(text: str) -> list[str]:
    """Comma-separated values; a [list] value keeps its commas."""
    values, depth, current = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            values.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        values.append(current)
    return [v for v in values if v.strip()]


def _toml(v) -> str:
    return config_lib.toml_value(v)
