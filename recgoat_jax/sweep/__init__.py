"""Many runs as one program: sweep members (seeds, data splits, hyperparameters) grouped by
shape and trained together (`engine.GroupTrainer`), with per-member model selection and the
same files as solo runs, plus sweep.json / sweep.md (`report`)."""

from recgoat_jax.sweep.engine import GroupTrainer
from recgoat_jax.sweep.spec import (PER_MEMBER_KEYS, Member, SweepError, configurations, expand,
                                    groups, parse_grid, parse_random)

__all__ = ["GroupTrainer", "Member", "PER_MEMBER_KEYS", "SweepError", "configurations",
           "expand", "groups", "parse_grid", "parse_random"]
