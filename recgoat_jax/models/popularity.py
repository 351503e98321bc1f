"""Popularity: every user gets the items ranked by training-interaction count (the field's floor)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from recgoat_jax.data import Dataset
from recgoat_jax.models.base import Recommender


def build_popularity(dataset: Dataset) -> Recommender:
    counts = np.bincount(dataset.train[:, 1], minlength=dataset.n_items).astype(np.float32)
    inputs = {"item_counts": jnp.asarray(counts)[:, None]}  # [I, 1]

    def embed(params, inputs):
        z_user = jnp.ones((dataset.n_users, 1), jnp.float32)  # [U, 1]
        return z_user, inputs["item_counts"]

    def loss(params, inputs, batch, key):
        raise TypeError("the popularity model has nothing to train")

    return Recommender(name="popularity", init=lambda key: {}, loss=loss, embed=embed,
                       inputs=inputs, trainable=False)
