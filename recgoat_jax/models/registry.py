"""`build_model`: from a config and a dataset to a `Recommender`.

The one place where the run configuration meets the models (as flax's ogbg_molpcba
`create_model`): below this module, models, graph layers and `recgoat_jax.ot` take plain
numbers, strings and tuples, and raise ValueError naming the argument; here those errors become
a `ConfigError` naming the config key.
"""

from __future__ import annotations

import dataclasses

from recgoat_jax.config import ConfigError, LossConfig, OATConfig, RunConfig
from recgoat_jax.data import Dataset
from recgoat_jax.models.base import Recommender, compute_dtype
from recgoat_jax.models.fusion import FusionOptions
from recgoat_jax.ot.plan import PlanOptions

MODELS = ("popularity", "mf", "lightgcn", "recgoat")


def _options(cls, section, prefix: str, **extra):
    """`cls` built from the fields of config `section` that it has (plus `extra`); its
    ValueError becomes a ConfigError under `prefix` (the option names are the config keys)."""
    names = {f.name for f in dataclasses.fields(cls)} - set(extra)
    try:
        return cls(**{n: getattr(section, n) for n in names}, **extra)
    except ValueError as e:
        raise ConfigError(f"{prefix}{e}") from None


def plan_options(oat: OATConfig) -> PlanOptions:
    """`model.oat` -> the transport solver's options."""
    return _options(PlanOptions, oat, "model.oat.")


def initial_weight(oat: OATConfig, modality: str) -> float:
    """The reference's alpha (image) and beta (text); other modalities get oat.other_weight."""
    return getattr(oat, initial_weight_key(modality).removeprefix("model.oat."))


def fusion_options(oat: OATConfig, modalities: tuple[str, ...]) -> FusionOptions:
    """`model.oat` -> the OAT fusion's options for `modalities` (in that order)."""
    try:
        return FusionOptions(plan=plan_options(oat), cost_scale=oat.cost_scale,
                             use_delta=oat.use_delta, weights=oat.fusion_weights,
                             initial_weights=tuple(initial_weight(oat, m) for m in modalities))
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(f"model.oat.{e}") from None


def recgoat_loss_options(loss: LossConfig):
    """`loss` -> RecGOAT's `LossOptions`."""
    from recgoat_jax.models.recgoat import LossOptions
    if loss.ot_weight == 0:  # a zero weight turns the term off (not computed, not logged)
        loss = dataclasses.replace(loss, ot_loss="none")
    return _options(LossOptions, loss, "loss.")


# The fusion's initial weight of each modality, by config key (the reference's alpha / beta).
INITIAL_WEIGHT_KEYS = {"image": "model.oat.alpha_image", "text": "model.oat.beta_text"}
OTHER_WEIGHT_KEY = "model.oat.other_weight"


def initial_weight_key(modality: str) -> str:
    return INITIAL_WEIGHT_KEYS.get(modality, OTHER_WEIGHT_KEY)


def recgoat_module(cfg: RunConfig, n_users: int, n_items: int, modalities: tuple[str, ...],
                   user_modalities: tuple[str, ...] = (), mesh=None):
    """The `RecGOAT` flax module that `cfg.model` (and `cfg.train.precision`) describe;
    `mesh`: the one its tables and graphs are partitioned over (``train.sharding = "graph"``)."""
    from recgoat_jax.models.recgoat import RecGOAT
    c = cfg.model
    # config.load has checked every value (user_gate_init in (0, 1), oat.rank <= dim, ...)
    try:
        dtype = compute_dtype(cfg.train.precision)
    except ValueError as e:
        raise ConfigError(f"train.{e}") from None
    return RecGOAT(n_users, n_items, modalities, user_modalities, dim=c.dim,
                   n_layers=c.n_layers, init_std=c.init_std, gat_layers=c.gat_layers,
                   gat_heads=c.gat_heads, feat_dropout=c.feat_dropout,
                   attn_dropout=c.attn_dropout, dropout=c.dropout,
                   fusion=fusion_options(c.oat, modalities), user_gate_init=c.user_gate_init,
                   dtype=dtype, mesh=mesh)


def build_recgoat(cfg: RunConfig, dataset: Dataset, mesh=None) -> Recommender:
    """RecGOAT as `cfg` describes it; with `mesh` and ``train.sharding = "graph"``, its ID
    tables, features and graphs partitioned over the mesh."""
    from recgoat_jax.graph.partition import NodeLayout
    from recgoat_jax.graph.partition_gat import EdgeCountError
    from recgoat_jax.models import recgoat
    from recgoat_jax.train.parallel import DATA_AXIS
    try:
        modalities, user_modalities = recgoat.select_modalities(
            dataset, cfg.model.modalities, cfg.model.user_side)
    except ValueError as e:
        raise ConfigError(f"model.{e}") from None
    if cfg.train.sharding != "graph":
        mesh = None
    layout = (None if mesh is None else
              NodeLayout(dataset.n_users, dataset.n_items, mesh.shape[DATA_AXIS]))
    module = recgoat_module(cfg, dataset.n_users, dataset.n_items, modalities, user_modalities,
                            mesh)
    try:
        inputs = recgoat.build_inputs(dataset, modalities, user_modalities,
                                      knn_k=cfg.model.knn_k, user_knn_k=cfg.model.user_knn_k,
                                      n_layers=cfg.model.n_layers, layout=layout,
                                      heads=cfg.model.gat_heads)
    except EdgeCountError as e:
        raise ConfigError(f"model.knn_k / model.gat_heads under train.sharding=\"graph\": {e}; "
                          "expected fewer neighbours or heads") from None
    return recgoat.recgoat_recommender(
        module, inputs, recgoat_loss_options(cfg.loss), layout=layout,
        initial_weight_keys=tuple(initial_weight_key(m) for m in modalities))


def build_lightgcn(cfg: RunConfig, dataset: Dataset, n_layers: int | None = None,
                   mesh=None) -> Recommender:
    """LightGCN with `cfg.model.n_layers` layers, or `n_layers` (0: MF); with `mesh` and
    ``train.sharding = "graph"``, its tables and graph partitioned over the mesh."""
    from recgoat_jax.models.lightgcn import lightgcn
    return lightgcn(dataset, dim=cfg.model.dim,
                    n_layers=cfg.model.n_layers if n_layers is None else n_layers,
                    init_std=cfg.model.init_std, decay=cfg.loss.decay,
                    mesh=mesh if cfg.train.sharding == "graph" else None)


def build_model(cfg: RunConfig, dataset: Dataset, mesh=None) -> Recommender:
    """The model of `cfg` on `dataset`; `mesh`: the training mesh (``train.sharding = "graph"``
    partitions over it; without one, or with "data", every array is whole)."""
    name = cfg.model.name
    if name == "popularity":
        from recgoat_jax.models.popularity import build_popularity
        return build_popularity(dataset)
    if name == "mf":
        return build_lightgcn(cfg, dataset, n_layers=0, mesh=mesh)
    if name == "lightgcn":
        return build_lightgcn(cfg, dataset, mesh=mesh)
    if name == "recgoat":
        return build_recgoat(cfg, dataset, mesh=mesh)
    raise ConfigError(f"model.name must be one of {', '.join(MODELS)}; got {name!r}")
