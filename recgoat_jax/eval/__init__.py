"""Evaluation: full ranking on device (ranking.py), metric formulas (metrics.py), model
selection and early stopping (protocol.py)."""

from recgoat_jax.eval.metrics import METRIC_NAMES, metrics_at_ks
from recgoat_jax.eval.protocol import (EarlyStopping, init_early_stopping,
                                       selection_result, should_evaluate, state_from_dict,
                                       state_to_dict, update)
from recgoat_jax.eval.ranking import (RankingEvaluator, UserBatch, batch_user_metrics,
                                      masked_top_k)

__all__ = [
    "METRIC_NAMES", "metrics_at_ks",
    "EarlyStopping", "init_early_stopping", "selection_result",
    "should_evaluate", "state_from_dict", "state_to_dict", "update",
    "RankingEvaluator", "UserBatch", "batch_user_metrics", "masked_top_k",
]
