"""The dispatch from `config.dataset` to a reader, and the checks against the config."""
from __future__ import annotations

import numpy as np

from cifar_jax.data.cifar_archive import VARIANTS, find_cifar, read_cifar
from cifar_jax.data.cifar_download import fetch_cifar, resolve_data_dir, resolve_url
from cifar_jax.data.image_folder import LAYOUT, load_image_folder
from cifar_jax.data.synthetic import make_synthetic
from cifar_jax.data.tfds_source import load_tfds
from cifar_jax.data.types import DATASETS, Dataset
from cifar_jax.errors import ConfigError, DataError

__all__ = ["DATASETS", "Dataset", "check_dataset", "load_dataset"]


def load_dataset(config) -> Dataset:
    """Reads the dataset that `config.dataset` names (see configs/default.py).

    Args:
      config: a run config (`dataset`, `data_dir`, `num_classes`, and the keys of that source).

    Returns:
      A Dataset of uint8 NHWC images, int labels and class names; raises DataError or
      ConfigError (one line) when the data is missing or does not match `num_classes`.
    """
    name = config.dataset
    if name in ("cifar100", "cifar10"):
        dataset = _load_cifar(name, config)
    elif name == "image_folder":
        if not config.data_dir:
            raise ConfigError(f"dataset=image_folder needs --config.data_dir=PATH: a folder or .tar/.tar.gz/.zip "
                              f"archive laid out as {LAYOUT}")
        dataset = load_image_folder(config.data_dir, config.cache_dir)
    elif name == "synthetic":
        dataset = make_synthetic(config.synthetic_train_size, config.synthetic_test_size, config.num_classes)
    elif isinstance(name, str) and name.startswith("tfds:") and name[5:]:
        dataset = load_tfds(name[5:], config.data_dir, config.download)
    else:
        raise ConfigError(f"unknown dataset {name!r}; pass --config.dataset= one of {', '.join(DATASETS)}")
    check_dataset(dataset, name, config.num_classes)
    return dataset


def _load_cifar(name, config) -> Dataset:
    variant = VARIANTS[name]
    data_dir = resolve_data_dir(config.data_dir)
    source = find_cifar(variant, data_dir)
    if source is None:
        # .get: configs saved by runs from before these keys existed lack them
        url = resolve_url(variant, config.data_url)
        if not config.download:
            raise DataError(f"no {variant.archive} (or extracted {variant.folder}/ folder) in {data_dir}: "
                            f"download {url} and put it at {data_dir / variant.archive}, or pass "
                            "--config.download=True to let cifar_jax fetch it")
        source = fetch_cifar(variant, data_dir, url, config.download_timeout)
    return read_cifar(variant, source, config.verify_md5)


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
