"""Run configuration as data: frozen dataclasses, read from TOML, overridable with ``--set``.

Sections: ``[data]``, ``[model]`` (with ``[model.oat]`` for RecGOAT's fusion), ``[loss]``,
``[train]``, ``[eval]``, ``[distributed]``. Every field has the reference's value or a
documented default; an unknown key is an error that names it.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from typing import Any


class ConfigError(ValueError):
    """A bad configuration file or override; the message names the key."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
    preset: str = "small"  # synthetic preset (tiny, small, baby, sports, electronics, tiktok)
    format: str = ""  # "" (use the preset) | "mmrec" | "lightgcn" | "recbole"
    path: str = ""  # folder holding the files of `format`
    name: str = ""  # dataset name inside `path` (<name>.inter); default: the folder's name
    seed: int = 2025  # synthetic generation and RecBole split
    feature_signal: float = -1.0  # synthetic: informativeness of every modality, 0 (noise)..1; <0 = preset's
    text_signal: float = -1.0  # synthetic: informativeness of the text modality alone; <0 = as above


@dataclasses.dataclass(frozen=True)
class OATConfig:
    """RecGOAT's OAT fusion: feature-dimension transport plan between modality and ID embeddings."""

    solver: str = "reference"  # "reference" (kernel Sinkhorn) | "ott" (log domain) | "lowrank"
    cost_scale: float = 100.0
    epsilon: float = 0.01
    iterations: int = 100  # reference: exact count; ott: max_iterations
    threshold: float = 1e-3  # ott only
    min_iterations: int = 0  # ott only; == iterations gives a fixed-length scan
    momentum: float = 1.0  # ott only (1.0 = plain Sinkhorn)
    anderson: int = 0  # ott only: Anderson acceleration memory (0 = off)
    epsilon_init: float = 0.0  # ott only: > epsilon starts an epsilon schedule decaying to epsilon
    epsilon_decay: float = 0.9
    tau_a: float = 1.0  # ott only: < 1 relaxes the marginals (unbalanced OT)
    tau_b: float = 1.0
    rank: int = 4  # lowrank solver only
    plan_grad: str = "stop"  # "stop" (reference) | "implicit" | "unroll"
    plan_scale: str = "one"  # "one" (reference: rows sum to 1/d) | "dim" (barycentric map)
    use_delta: bool = True  # learnable residual map Delta_m
    fusion_weights: str = "unconstrained"  # "unconstrained" (reference) | "softmax"
    alpha_image: float = 0.05  # initial fusion weight of the image modality (reference alpha)
    beta_text: float = 0.8  # initial fusion weight of the text modality (reference beta)
    other_weight: float = 0.05  # initial fusion weight of any other modality (audio, ...)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str = "lightgcn"  # "popularity" | "mf" | "lightgcn" | "recgoat"
    dim: int = 64
    n_layers: int = 3  # LightGCN propagation layers
    init_std: float = 0.1  # N(0, init_std^2) for ID embeddings, as the reference
    # RecGOAT modality branches
    gat_layers: int = 1
    gat_heads: int = 8  # the reference ignores --attn_heads and always uses 8
    knn_k: int = 20  # item kNN graph (20 Baby / Electronics, 30 Sports)
    feat_dropout: float = 0.1
    attn_dropout: float = 0.1
    dropout: float = 0.1  # after each GAT layer and after the fusion LayerNorm
    modalities: tuple[str, ...] = ()  # empty: every item feature the dataset has
    user_side: bool = False  # the paper's user-user graph branch (needs user features)
    user_knn_k: int = 20
    user_gate_init: float = 0.1  # initial share (0..1, open) of the user branch in z_user
    oat: OATConfig = dataclasses.field(default_factory=OATConfig)


@dataclasses.dataclass(frozen=True)
class LossConfig:
    decay: float = 1e-4  # weight of the L2 of the batch's layer-0 embeddings
    contrastive: str = "reference"  # "reference" | "cmcl" (paper) | "none"
    cl_weight: float = 0.032  # lambda_cl (0.032 Baby, 0.005 Sports, 0.05 Electronics)
    modality_weight: float = 0.5  # w: share of the modality terms inside CL
    temperature: float = 0.2
    infonce_block: int = 0  # > 0: InfoNCE in row blocks of this size (never B x B at once)
    ot_loss: str = "none"  # "none" | "sinkhorn_divergence" | "entropic": modality vs ID, batch items
    ot_weight: float = 0.0
    ot_epsilon: float = 0.05  # absolute: the OT loss compares L2-normalised embeddings
    ot_rows: int = 512  # batch rows the OT loss uses (0 = all); its cost grows as rows^2


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100
    batch_size: int = 4096  # global batch (all devices together)
    lr: float = 8e-4
    seed: int = 2025
    precision: str = "f32"  # "f32" | "bf16" (bf16 compute in the dense matmuls)
    n_devices: int = 0  # data-parallel devices; 0 = all local devices
    checkpoint_every: int = 0  # epochs between checkpoints; 0 = none
    max_to_keep: int = 3


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    protocol: str = "mmrec"  # "mmrec" (select on valid) | "reference" (best test, every 20)
    every: int = 0  # epochs between evaluations; 0 = the protocol's (1 mmrec, 20 reference)
    patience: int = 20  # evaluations without a better valid metric before stopping (mmrec)
    metric: str = ""  # selection metric; "" = the protocol's (recall@20 mmrec, ndcg@20 reference)
    ks: tuple[int, ...] = (5, 10, 20, 50)
    user_batch: int = 1024  # users ranked per step


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """Multi-host set-up for jax.distributed.initialize; empty values come from the environment."""

    enabled: bool = False
    coordinator_address: str = ""
    num_processes: int = 0
    process_id: int = -1


@dataclasses.dataclass(frozen=True)
class RunConfig:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)


def _coerce(cls, path: str, raw: dict) -> Any:
    """Build dataclass `cls` from a nested dict, checking keys and types."""
    if not isinstance(raw, dict):
        raise ConfigError(f"[{path}] must be a table, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"unknown key '{path + '.' if path else ''}{unknown[0]}': "
                          f"expected one of {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        key = f"{path}.{f.name}" if path else f.name
        value, hint = raw[f.name], hints[f.name]
        if dataclasses.is_dataclass(hint):
            kwargs[f.name] = _coerce(hint, key, value)
        elif typing.get_origin(hint) is tuple:
            (elem,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"'{key}' must be a list of {elem.__name__}, got {value!r}")
            kwargs[f.name] = tuple(_scalar(elem, key, v) for v in value)
        else:
            kwargs[f.name] = _scalar(hint, key, value)
    return cls(**kwargs)


def _scalar(hint, key: str, value):
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is bool and not isinstance(value, bool) or not isinstance(value, hint) \
            or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"'{key}' must be {hint.__name__}, got {value!r}")
    return value


def _parse_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare string such as `model.name=recgoat`


def _set_path(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{dotted}': '{p}' is not a section")
    node[leaf] = value


def load(path: str | os.PathLike | None = None, overrides: list[str] = ()) -> RunConfig:
    """Read a TOML file (or start from defaults) and apply ``key.path=value`` overrides."""
    raw: dict = {}
    if path:
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like section.key=value")
        key, text = item.split("=", 1)
        _set_path(raw, key.strip(), _parse_value(text.strip()))
    try:
        return _coerce(RunConfig, "", raw)
    except ConfigError as e:
        raise ConfigError(f"{path or 'defaults'}: {e}") from None


def from_dict(raw: dict) -> RunConfig:
    return _coerce(RunConfig, "", raw)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} to TOML")


def dumps(cfg) -> str:
    """The resolved config as TOML that `load` reads back to an equal RunConfig."""
    lines: list[str] = []

    def section(prefix: str, d: dict) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict)}
        if prefix:
            lines.append(f"\n[{prefix}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in scalars.items())
        for k, v in d.items():
            if isinstance(v, dict):
                section(f"{prefix}.{k}" if prefix else k, v)

    section("", to_dict(cfg))
    return "\n".join(lines).lstrip() + "\n"


def replace(cfg, **changes):
    """dataclasses.replace with dotted keys: replace(cfg, **{"train.lr": 1e-3})."""
    raw = to_dict(cfg)
    for k, v in changes.items():
        _set_path(raw, k, v)
    return from_dict(raw)
