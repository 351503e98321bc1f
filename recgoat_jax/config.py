"""Run configuration as data: frozen dataclasses, read from TOML, overridable with ``--set``.

Sections: ``[data]``, ``[model]`` (with ``[model.oat]`` for RecGOAT's fusion), ``[loss]``,
``[train]``, ``[eval]``, ``[distributed]``. Every field is declared once, with its default,
one line of help and the values it may take (`setting`); `load` checks keys, types, choices
and ranges from that one table (and the few rules that tie two fields together, `_check_rules`)
before any data is read, so a typo stops the run with one line naming the key.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Callable, NamedTuple


class ConfigError(ValueError):
    """A bad configuration file or override; the message names the key."""


class Rule(NamedTuple):
    """A range a numeric value must lie in: `ok(value)`, described as `text` (e.g. "> 0")."""

    ok: Callable[[Any], bool]
    text: str


def gt(low) -> Rule:
    return Rule(lambda v: v > low, f"> {low}")


def ge(low) -> Rule:
    return Rule(lambda v: v >= low, f">= {low}")


def between(low, high, closed: str = "[]") -> Rule:
    """low..high; `closed` says which ends are included: "[]", "(]", "[)" or "()"."""
    def ok(v):
        return ((v >= low) if closed[0] == "[" else (v > low)) and \
            ((v <= high) if closed[1] == "]" else (v < high))
    return Rule(ok, f"in {closed[0]}{low}, {high}{closed[1]}")


def setting(default, help: str, *, choices: tuple | Callable[[], tuple] = (), rule: Rule | None = None,
            each: Rule | None = None):
    """A config field: its default, one line of help, and the allowed values (a tuple of
    `choices`, a `rule` for a number, `each` for every element of a list)."""
    meta = {"help": help, "choices": choices if callable(choices) else tuple(choices),
            "rule": rule, "each": each}
    if isinstance(default, tuple):
        return dataclasses.field(default_factory=lambda: default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


PRESETS = ("tiny", "small", "longtail", "baby", "sports", "electronics", "tiktok", "xl")
DATA_FORMATS = ("", "mmrec", "lightgcn", "recbole")
MODELS = ("popularity", "mf", "lightgcn", "recgoat")
METRICS = ("recall", "ndcg", "precision", "hit")


def _synthetic_presets() -> tuple[str, ...]:
    from recgoat_jax.data.synthetic import PRESETS
    return tuple(PRESETS)


def _synthetic_user_features() -> tuple[str, ...]:
    from recgoat_jax.data.synthetic import USER_FEATURES
    return USER_FEATURES


@dataclasses.dataclass(frozen=True)
class DataConfig:
    preset: str = setting("small", "synthetic preset, used when data.format is empty",
                          choices=_synthetic_presets)
    format: str = setting("", "files to read: \"\" (the synthetic preset), mmrec, lightgcn, "
                              "recbole", choices=DATA_FORMATS)
    path: str = setting("", "folder holding the files of data.format (stored absolute)")
    name: str = setting("", "dataset name inside data.path (<name>.inter); default: the "
                            "folder's name")
    seed: int = setting(2025, "seed of the synthetic generation and of the RecBole split")
    feature_signal: float = setting(-1.0, "synthetic: informativeness of every modality, "
                                          "0 (noise)..1; < 0 = the preset's",
                                    rule=Rule(lambda v: v < 0 or v <= 1, "<= 1 (< 0 = preset's)"))
    text_signal: float = setting(-1.0, "synthetic: informativeness of the text modality alone; "
                                       "< 0 = as feature_signal",
                                 rule=Rule(lambda v: v < 0 or v <= 1, "<= 1 (< 0 = as above)"))
    user_features: str = setting("history", "synthetic: user text profiles from each user's "
                                            "training items (history) or from the planted user "
                                            "factors (oracle: leaks the held-out interactions)",
                                 choices=_synthetic_user_features)


@dataclasses.dataclass(frozen=True)
class OATConfig:
    """RecGOAT's OAT fusion: feature-dimension transport plan between modality and ID embeddings."""

    solver: str = setting("reference", "transport solver: reference (kernel Sinkhorn), ott "
                                       "(log domain), lowrank",
                          choices=("reference", "ott", "lowrank"))
    cost_scale: float = setting(100.0, "multiplier of the closed-form d x d cost", rule=gt(0))
    epsilon: float = setting(0.01, "entropic regularisation of the plan", rule=gt(0))
    iterations: int = setting(100, "Sinkhorn iterations (reference: exact; ott: maximum)",
                              rule=ge(1))
    threshold: float = setting(1e-3, "ott: marginal error at which Sinkhorn stops", rule=gt(0))
    min_iterations: int = setting(0, "ott: iterations before the threshold is checked "
                                     "(== iterations: a fixed-length scan)", rule=ge(0))
    momentum: float = setting(1.0, "ott: Sinkhorn momentum (1.0 = plain Sinkhorn)",
                              rule=between(0, 2, "()"))
    anderson: int = setting(0, "ott: Anderson acceleration memory (0 = off)", rule=ge(0))
    epsilon_init: float = setting(0.0, "ott: > epsilon starts an epsilon schedule decaying to "
                                       "epsilon", rule=ge(0))
    epsilon_decay: float = setting(0.9, "ott: factor of the epsilon schedule",
                                   rule=between(0, 1, "(]"))
    tau_a: float = setting(1.0, "ott: < 1 relaxes the row marginal (unbalanced OT)",
                           rule=between(0, 1, "(]"))
    tau_b: float = setting(1.0, "ott: < 1 relaxes the column marginal", rule=between(0, 1, "(]"))
    rank: int = setting(4, "lowrank solver: rank of the plan", rule=ge(1))
    plan_grad: str = setting("stop", "gradient through the plan: stop (reference), implicit, "
                                     "unroll", choices=("stop", "implicit", "unroll"))
    plan_scale: str = setting("one", "plan scale: one (reference: rows sum to 1/d), dim "
                                     "(barycentric map)", choices=("one", "dim"))
    cost_norm: str = setting("none", "ott / lowrank: divide the cost by its max or mean entry "
                                     "before solving (epsilon then relative to it)",
                             choices=("none", "max", "mean"))
    use_delta: bool = setting(True, "learnable residual map Delta_m beside the plan")
    fusion_weights: str = setting("unconstrained", "fusion weights: unconstrained (reference) "
                                                   "or softmax",
                                  choices=("unconstrained", "softmax"))
    alpha_image: float = setting(0.05, "initial fusion weight of the image modality")
    beta_text: float = setting(0.8, "initial fusion weight of the text modality")
    other_weight: float = setting(0.05, "initial fusion weight of any other modality")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str = setting("lightgcn", "model: popularity, mf, lightgcn, recgoat", choices=MODELS)
    dim: int = setting(64, "embedding size d", rule=ge(1))
    n_layers: int = setting(3, "LightGCN propagation layers", rule=ge(0))
    init_std: float = setting(0.1, "std of the N(0, std^2) ID-embedding initialisation",
                              rule=gt(0))
    gat_layers: int = setting(1, "GAT layers per modality branch", rule=ge(1))
    gat_heads: int = setting(8, "GAT attention heads (must divide model.dim)", rule=ge(1))
    knn_k: int = setting(20, "neighbours per item in the modality kNN graphs (< items)",
                         rule=ge(1))
    feat_dropout: float = setting(0.1, "dropout on the modality features",
                                  rule=between(0, 1, "[)"))
    attn_dropout: float = setting(0.1, "dropout on the GAT attention", rule=between(0, 1, "[)"))
    dropout: float = setting(0.1, "dropout after each GAT layer and the fusion LayerNorm",
                             rule=between(0, 1, "[)"))
    modalities: tuple[str, ...] = setting((), "item modalities to use; empty: every item "
                                              "feature file the dataset has")
    user_side: bool = setting(False, "the paper's user-user graph branch (needs user features)")
    user_knn_k: int = setting(20, "neighbours per user in the user kNN graph (< users)",
                              rule=ge(1))
    user_gate_init: float = setting(0.1, "initial share of the user branch in z_user",
                                    rule=between(0, 1, "()"))
    oat: OATConfig = dataclasses.field(default_factory=OATConfig)


@dataclasses.dataclass(frozen=True)
class LossConfig:
    decay: float = setting(1e-4, "weight of the L2 of the batch's layer-0 embeddings", rule=ge(0))
    contrastive: str = setting("reference", "contrastive loss: reference, cmcl (paper), none",
                               choices=("reference", "cmcl", "none"))
    cl_weight: float = setting(0.032, "weight lambda_cl of the contrastive loss", rule=ge(0))
    modality_weight: float = setting(0.5, "share w of the modality terms inside the "
                                          "contrastive loss", rule=between(0, 1))
    temperature: float = setting(0.2, "InfoNCE temperature", rule=gt(0))
    infonce_block: int = setting(0, "> 0: InfoNCE in row blocks of this size (same values)",
                                 rule=ge(0))
    infonce_distinct: bool = setting(True, "InfoNCE over the batch's distinct rows when a "
                                           "user or item table is smaller than the batch (same "
                                           "values); false: over every batch row")
    ot_loss: str = setting("none", "distribution-level OT loss: none, sinkhorn_divergence, "
                                   "entropic",
                           choices=("none", "sinkhorn_divergence", "entropic"))
    ot_weight: float = setting(0.0, "weight of the OT loss", rule=ge(0))
    ot_epsilon: float = setting(0.05, "entropic regularisation of the OT loss", rule=gt(0))
    ot_rows: int = setting(512, "batch rows the OT loss uses (0 = all)", rule=ge(0))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = setting(100, "maximum epochs (early stopping may end the run sooner)",
                          rule=ge(1))
    batch_size: int = setting(4096, "global batch size (all devices together); clamped to "
                                    "the training pairs", rule=ge(1))
    lr: float = setting(8e-4, "Adam learning rate", rule=gt(0))
    seed: int = setting(2025, "seed of initialisation, shuffles, negatives and dropout")
    precision: str = setting("f32", "dense-matmul precision: f32 or bf16", choices=("f32", "bf16"))
    n_devices: int = setting(0, "data-parallel devices; 0 = all local devices", rule=ge(0))
    sharding: str = setting("data", "data: tables and graphs replicated, batch split over the "
                                    "devices; graph: ID tables, optimiser state, features and "
                                    "graphs split by rows over them too (lightgcn, mf, recgoat)",
                            choices=("data", "graph"))
    checkpoint_every: int = setting(0, "epochs between checkpoints; 0 = none", rule=ge(0))
    sweep_vmap: int = setting(0, "sweeps: members of a group computed together by jax.vmap on "
                                 "each device (the rest one after another); 0 = auto: 1 on "
                                 "CPU, all of a device's members on GPU/TPU", rule=ge(0))
    max_to_keep: int = setting(3, "newest checkpoints kept (the best one besides)", rule=ge(1))
    tensorboard: bool = setting(False, "also write TensorBoard event files to <out>/tensorboard "
                                       "(needs the tensorboard extra)")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    protocol: str = setting("mmrec", "mmrec (select on valid, early stopping) or reference "
                                     "(best test every 20 epochs)",
                            choices=("mmrec", "reference"))
    every: int = setting(0, "epochs between evaluations; 0 = the protocol's (1 mmrec, 20 "
                            "reference); the last epoch is always evaluated", rule=ge(0))
    patience: int = setting(20, "evaluations without a better valid metric before stopping",
                            rule=ge(0))
    metric: str = setting("", "selection metric, e.g. recall@20; \"\" = the protocol's "
                              "(recall@20 mmrec, ndcg@20 reference)")
    ks: tuple[int, ...] = setting((5, 10, 20, 50), "cut-offs K of the reported metrics",
                                  each=ge(1))
    user_batch: int = setting(1024, "users ranked per evaluation step", rule=ge(1))


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """Multi-host set-up for jax.distributed.initialize; empty values come from the environment."""

    enabled: bool = setting(False, "call jax.distributed.initialize (multi-host)")
    coordinator_address: str = setting("", "host:port of process 0; \"\" = from the environment")
    num_processes: int = setting(0, "processes; 0 = from the environment", rule=ge(0))
    process_id: int = setting(-1, "this process's index; -1 = from the environment", rule=ge(-1))


@dataclasses.dataclass(frozen=True)
class RunConfig:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)


# ---------------------------------------------------------------------------------------------
# Reading and checking


def fields_table(cls=RunConfig, prefix: str = "") -> list[tuple[str, Any, dict]]:
    """(dotted key, default, metadata) of every leaf field, in declaration order."""
    rows = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            rows += fields_table(hint, f"{key}.")
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rows.append((key, default, dict(f.metadata)))
    return rows


def _coerce(cls, path: str, raw: dict) -> Any:
    """Build dataclass `cls` from a nested dict, checking keys, types, choices and ranges."""
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
            continue
        if typing.get_origin(hint) is tuple:
            (elem,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"'{key}' must be a list of {elem.__name__}, got {value!r}")
            value = tuple(_scalar(elem, key, v) for v in value)
        else:
            value = _scalar(hint, key, value)
        _check_allowed(key, value, f.metadata)
        kwargs[f.name] = value
    return cls(**kwargs)


def _scalar(hint, key: str, value):
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is bool and not isinstance(value, bool) or not isinstance(value, hint) \
            or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"'{key}' must be {hint.__name__}, got {value!r}")
    return value


def _check_allowed(key: str, value, meta) -> None:
    choices = meta.get("choices") or ()
    if callable(choices):
        choices = choices()
    if choices and value not in choices:
        close = [c for c in choices if _similar(str(value), str(c))]
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"'{key}' = {value!r}: expected one of "
                          f"{', '.join(repr(c) for c in choices)}{hint}")
    rule = meta.get("rule")
    if rule is not None and not rule.ok(value):
        raise ConfigError(f"'{key}' = {value!r}: expected {rule.text}")
    each = meta.get("each")
    if each is not None:
        if not value:
            raise ConfigError(f"'{key}' is empty: expected at least one value")
        for v in value:
            if not each.ok(v):
                raise ConfigError(f"'{key}' holds {v!r}: every value must be {each.text}")


def _similar(a: str, b: str) -> bool:
    """A typo of b: same letters give or take one, or one transposition."""
    import difflib
    return difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio() >= 0.75


METRIC_PATTERN = re.compile(rf"({'|'.join(METRICS)})@(\d+)")
_PROTOCOL_METRIC = {"mmrec": "recall@20", "reference": "ndcg@20"}


def selection_metric(cfg: RunConfig) -> str:
    """The metric model selection reads: eval.metric, or the protocol's default."""
    return cfg.eval.metric or _PROTOCOL_METRIC[cfg.eval.protocol]


def _check_rules(cfg: RunConfig) -> None:
    """The rules that tie several fields together (each field alone was checked already)."""
    metric = selection_metric(cfg)
    m = METRIC_PATTERN.fullmatch(metric)
    if not m:
        raise ConfigError(f"'eval.metric' = {cfg.eval.metric!r}: expected NAME@K with NAME one "
                          f"of {', '.join(METRICS)} (e.g. recall@20)")
    if int(m[2]) not in cfg.eval.ks:
        which = ("'eval.metric'" if cfg.eval.metric else
                 f"the selection metric of eval.protocol '{cfg.eval.protocol}'")
        raise ConfigError(f"{which} is {metric}, but eval.ks = {list(cfg.eval.ks)} does not "
                          f"hold {m[2]}: add {m[2]} to eval.ks or choose another eval.metric")
    if cfg.data.format and not cfg.data.path:
        raise ConfigError(f"'data.path' is empty: data.format = '{cfg.data.format}' reads a "
                          "folder")
    if cfg.model.name == "recgoat" and cfg.model.dim % cfg.model.gat_heads:
        raise ConfigError(f"'model.gat_heads' = {cfg.model.gat_heads} must divide model.dim "
                          f"= {cfg.model.dim}")
    if cfg.model.name == "recgoat" and cfg.model.oat.solver == "lowrank" \
            and cfg.model.oat.rank > cfg.model.dim:
        raise ConfigError(f"'model.oat.rank' = {cfg.model.oat.rank} must be <= model.dim "
                          f"= {cfg.model.dim}")
    if cfg.model.name == "recgoat":
        from recgoat_jax.ot.plan import PlanOptions  # its construction checks the solver's rules
        oat = dataclasses.asdict(cfg.model.oat)
        try:
            PlanOptions(**{f.name: oat[f.name] for f in dataclasses.fields(PlanOptions)})
        except ValueError as e:
            raise ConfigError(f"model.oat.{e}") from None


def parse_value(text: str):
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


def packaged_presets() -> list[str]:
    """Names of the configs shipped inside the package (recgoat_jax/configs/*.toml)."""
    folder = resources.files("recgoat_jax") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def config_path(name: str | os.PathLike) -> Path:
    """`--config` to a file: a TOML path, or the name of a packaged preset (`recgoat`)."""
    path = Path(name)
    if path.is_dir():
        raise ConfigError(f"--config {name}: is a folder; expected a TOML file or one of the "
                          f"packaged presets {packaged_presets()}")
    if path.is_file():
        return path
    packaged = resources.files("recgoat_jax") / "configs" / f"{path.name.removesuffix('.toml')}.toml"
    if path.parent == Path(".") and packaged.is_file():
        return Path(str(packaged))
    raise ConfigError(f"config file not found: {name} (a TOML file, or one of the packaged "
                      f"presets {packaged_presets()})")


def load(path: str | os.PathLike | None = None, overrides: list[str] = ()) -> RunConfig:
    """Read a TOML file or packaged preset (or start from defaults), apply ``key.path=value``
    overrides, and check every value; ConfigError names the file and the key."""
    raw: dict = {}
    if path:
        file = config_path(path)
        try:
            with open(file, "rb") as f:
                raw = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot be read: {e}") from None
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like section.key=value")
        key, text = item.split("=", 1)
        _set_path(raw, key.strip(), parse_value(text.strip()))
    try:
        return from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None


def from_dict(raw: dict) -> RunConfig:
    cfg = _coerce(RunConfig, "", raw)
    _check_rules(cfg)
    return cfg


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def to_flat_dict(cfg) -> dict:
    """{dotted key: value}, e.g. {"train.lr": 0.0008, ...}."""
    from recgoat_jax.tree_utils import flatten
    return flatten(to_dict(cfg), sep=".")


def same_stored_config(stored: dict, wanted: dict) -> bool:
    """Whether a config dict stored by an earlier run (`to_dict`, as JSON holds it) describes
    `wanted` (the same, as JSON holds it). Keys the package gained after `stored` was written
    count as equal when `wanted` holds their default, so that sweeps and their checkpoints
    keep resuming across such additions."""
    from recgoat_jax.tree_utils import flatten

    fa, fb = flatten(stored, sep="."), flatten(wanted, sep=".")
    if any(k not in fb or fa[k] != fb[k] for k in fa):
        return False
    defaults = to_flat_dict(RunConfig())
    return all(k in fa or (k in defaults and fb[k] == defaults[k]) for k in fb)


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} to TOML")


def dumps(cfg, comment_defaults: bool = False) -> str:
    """The resolved config as TOML that `load` reads back to an equal RunConfig; with
    `comment_defaults`, each line ends with its default and help as a comment."""
    meta = {key: (default, m) for key, default, m in fields_table()}
    lines: list[str] = []

    def section(prefix: str, d: dict) -> None:
        if prefix:
            lines.append(f"\n[{prefix}]")
        for k, v in d.items():
            if isinstance(v, dict):
                continue
            line = f"{k} = {toml_value(v)}"
            if comment_defaults:
                default, m = meta[f"{prefix}.{k}" if prefix else k]
                line = f"{line:<40} # {m['help']} (default {toml_value(default)})"
            lines.append(line)
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
