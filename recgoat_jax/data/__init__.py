"""Datasets: the host-side container, readers for the field's formats, synthetic presets."""

from recgoat_jax.data.dataset import Dataset, DataError
from recgoat_jax.data.load import load_dataset
from recgoat_jax.data.readers import read_lightgcn, read_mmrec, read_recbole, read_recbole_items
from recgoat_jax.data.split import split_per_user
from recgoat_jax.data.synthetic import PRESETS, generate, make_synthetic

__all__ = ["Dataset", "DataError", "load_dataset", "read_lightgcn", "read_mmrec", "read_recbole",
           "read_recbole_items", "split_per_user", "PRESETS", "generate", "make_synthetic"]
