"""recgoat_jax: RecGOAT (graph optimal adaptive transport for LLM-enhanced multimodal
recommendation) in JAX / Flax.

Concept per sub-package: ``data`` (datasets, readers, synthetic presets), ``graph`` (user-item
and item-item graphs, propagation, GAT), ``ot`` (transport cost, plans, OT losses), ``models``
(popularity, MF, LightGCN, RecGOAT), ``train`` (compiled epoch, parallelism, checkpoints),
``eval`` (full ranking and metrics), ``features`` (text encoders, LLM user profiles).
"""

__version__ = "0.1.0"
