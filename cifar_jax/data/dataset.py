"""The Dataset container and the dispatch from `config.dataset` to a reader."""
from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from cifar_jax.errors import ConfigError, DataError


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


DATASETS = ("cifar100", "cifar10", "image_folder", "synthetic", "tfds:NAME")


def load_dataset(config) -> Dataset:
    """Reads the dataset that `config.dataset` names (see configs/default.py).

    Args:
      config: a run config (`dataset`, `data_dir`, `num_classes`, and the keys of that source).

    Returns:
      A Dataset of uint8 NHWC images, int labels and class names; raises DataError or
      ConfigError (one line) when the data is missing or does not match `num_classes`.
    """
    # Readers are imported here: they import this module (for Dataset), and most runs need one.
    name = config.dataset
    if name in ("cifar100", "cifar10"):
        dataset = _load_cifar(name, config)
    elif name == "image_folder":
        from cifar_jax.data.image_folder import load_image_folder

        dataset = load_image_folder(config.data_dir, config.cache_dir)
    elif name == "synthetic":
        from cifar_jax.data.synthetic import make_synthetic

        dataset = make_synthetic(config.synthetic_train_size, config.synthetic_test_size, config.num_classes)
    elif isinstance(name, str) and name.startswith("tfds:") and name[5:]:
        from cifar_jax.data.tfds_source import load_tfds

        dataset = load_tfds(name[5:], config.data_dir, config.download)
    else:
        raise ConfigError(f"unknown dataset {name!r}; pass --config.dataset= one of {', '.join(DATASETS)}")
    check_dataset(dataset, name, config.num_classes)
    return dataset


def _load_cifar(name, config) -> Dataset:
    from cifar_jax.data.cifar_archive import VARIANTS, find_cifar, read_cifar

    variant = VARIANTS[name]
    data_dir = pathlib.Path(config.data_dir).expanduser().absolute()
    source = find_cifar(variant, data_dir)
    if source is not None:
        return read_cifar(variant, source, config.verify_md5)
    where = (f"no {variant.archive} (or extracted {variant.folder}/ folder) in {data_dir}: download "
             f"{variant.url} and put it at {data_dir / variant.archive}")
    if not config.download:
        raise DataError(f"{where}, or pass --config.download=True to let TFDS fetch {name}")
    from cifar_jax.data.tfds_source import TfdsUnavailable, load_tfds

    try:
        return load_tfds(name, str(data_dir), download=True)
    except TfdsUnavailable as e:
        raise DataError(f"{where} (the TFDS fallback failed: {e.reason}); with TFDS data already prepared, "
                        f"use --config.dataset=tfds:{name} and --config.data_dir=<its data_dir>") from None


def check_dataset(dataset: Dataset, name: str, num_classes: int) -> None:
    """DataError unless `dataset` has the shapes, dtypes and class count the model expects."""
    if num_classes != dataset.num_classes:
        raise DataError(f"config num_classes={num_classes} but the {name} data has {dataset.num_classes} "
                        f"classes; pass --config.num_classes={dataset.num_classes}")
    for split in ("train", "test"):
        images, labels = getattr(dataset, f"{split}_images"), getattr(dataset, f"{split}_labels")
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
            raise DataError(f"the {name} {split} images are {images.dtype} {images.shape}, not "
                            "non-empty uint8 (N, H, W, 3); the data files are not in the expected format")
        if labels.dtype != np.int32 or labels.shape != (len(images),):
            raise DataError(f"the {name} {split} labels are {labels.dtype} {labels.shape} for "
                            f"{len(images)} images; the data files are not in the expected format")
        if labels.min() < 0 or labels.max() >= num_classes:
            raise DataError(f"the {name} {split} labels span {labels.min()}..{labels.max()}, outside "
                            f"0..{num_classes - 1}; the data files are corrupt or do not match their class list")
