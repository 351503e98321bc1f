"""Datasets: the host-side container, readers for the field's formats, synthetic presets."""

from recgoat_jax.data.dataset import Dataset, DataError

__all__ = ["Dataset", "DataError"]
