"""Image classification sets from TensorFlow Datasets, read with `tfds.data_source`.

`tfds.data_source` reads prepared ArrayRecord files with plain numpy, so no TensorFlow is
needed to read (TFDS still needs it to *prepare* most datasets on first download).
tensorflow_datasets is imported here, on first use only: it is optional and slow to import.
Images that are not 32x32 RGB are converted as pixels.py documents.
"""
from __future__ import annotations

import pathlib

import numpy as np

from cifar_jax.data.pixels import array_to_rgb32
from cifar_jax.data.types import Dataset
from cifar_jax.errors import DataError

_BATCH = 1024


def load_tfds(name: str, data_dir: str, download: bool) -> Dataset:
    """The train and test splits of TFDS dataset `name`, stored under `data_dir` ("" means
    TFDS's own default: $TFDS_DATA_DIR or ~/tensorflow_datasets)."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataError(f'dataset tfds:{name} needs TFDS, but tensorflow_datasets is not installed: '
                        'run pip install "cifar-jax[tfds]"') from None
    folder = str(pathlib.Path(data_dir).expanduser().absolute()) if data_dir else None
    where = folder or "TFDS's default data_dir"
    try:
        if not download and not tfds.builder(name, data_dir=folder).is_prepared():
            raise FileNotFoundError(f"{name} is not prepared there")
        train, test = (tfds.data_source(name, split=split, data_dir=folder, download=download)
                       for split in ("train", "test"))
        features = train.dataset_info.features
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(f"TFDS has no dataset named {name!r}; pass --config.dataset=tfds:NAME with a name "
                        "from tfds.list_builders()") from None
    except Exception as e:  # TFDS fails in many ways (offline, not prepared, no TensorFlow...)
        reason = f"TFDS could not load {name} from {where} ({type(e).__name__}: {_one_line(e)})"
        fix = ("check the network, or prepare the dataset where TFDS can reach it (preparing most TFDS "
               "datasets needs TensorFlow: pip install tensorflow-cpu)" if download else
               "pass --config.download=True to let TFDS fetch and prepare it")
        raise DataError(f"{reason}; {fix}") from None
    if "image" not in features or "label" not in features:
        raise DataError(f"TFDS dataset {name} has features {', '.join(features.keys())}, not 'image' "
                        "and 'label'; choose an image classification dataset")
    class_names = tuple(features["label"].names)
    return Dataset(*_read_split(train, name, "train"), *_read_split(test, name, "test"), class_names)


def _read_split(source, name, split):
    images, labels = [], []
    batched = hasattr(source, "__getitems__")
    for start in range(0, len(source), _BATCH):
        keys = list(range(start, min(start + _BATCH, len(source))))
        if batched:
            try:
                examples = source.__getitems__(keys)
            except TypeError:
                # tfds.testing.mock_data (tfds 4.9.10) installs a __getitems__ that is
                # called without `self`; item-by-item reads work there. A real TypeError
                # would recur below and surface.
                batched = False
        if not batched:
            examples = [source[k] for k in keys]
        images.extend(array_to_rgb32(np.asarray(e["image"])) for e in examples)
        labels.extend(int(e["label"]) for e in examples)
    if not images:
        raise DataError(f"TFDS dataset {name} has an empty {split} split; choose a dataset with "
                        "train and test examples")
    return np.stack(images), np.asarray(labels, dtype=np.int32)


def _one_line(error: Exception, limit: int = 300) -> str:
    text = " ".join(str(error).split()) or "no message"
    return text if len(text) <= limit else text[: limit - 3] + "..."
