"""Datasets as uint8 NHWC arrays, integer labels and class names.

Normalising and augmenting happen later, on the device; this layer only reads files.
"""
from cifar_jax.data.dataset import load_dataset
from cifar_jax.data.types import Dataset

__all__ = ["Dataset", "load_dataset"]
