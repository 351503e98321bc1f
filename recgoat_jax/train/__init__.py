"""Training: the train state, one compiled epoch (lax.scan over batches), the run loop, data
parallelism over a device mesh (parallel), multi-host start-up (distributed), Orbax checkpoints
and exact resume (checkpoint), the non-finite guard (guard)."""
