"""Training: the train state, one compiled epoch (lax.scan over batches), the run loop."""
