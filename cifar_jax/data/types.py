"""The Dataset container and the dataset names, shared by the readers and the dispatch.

It imports no reader and no dispatch code, so both sides import it without a cycle.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Images as uint8 (N, H, W, 3), labels as int32 (N,), class names in label order."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# The values `config.dataset` accepts (tfds:NAME stands for any TFDS dataset name).
DATASETS = ("cifar100", "cifar10", "image_folder", "synthetic", "tfds:NAME")
