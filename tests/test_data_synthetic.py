"""The synthetic dataset: deterministic, balanced, and learnable through the augmentation."""
import random

import numpy as np
import pytest

from cifar_jax.data import load_dataset
from cifar_jax.data.synthetic import make_synthetic
from tests import cifar_files


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    cifar_files.block_network(monkeypatch)


def _augment(images, rng):
    """The training augmentation: reflect-pad 4, random 32x32 crop, random horizontal flip."""
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="reflect")
    out = np.empty_like(images)
    for i, (dy, dx, flip) in enumerate(zip(rng.integers(0, 9, len(images)), rng.integers(0, 9, len(images)),
                                           rng.random(len(images)) < 0.5)):
        crop = padded[i, dy:dy + 32, dx:dx + 32]
        out[i] = crop[:, ::-1] if flip else crop
    return out


def _nearest_class_mean_accuracy(data, test_images):
    train = data.train_images.reshape(len(data.train_images), -1).astype(np.float32)
    means = np.stack([train[data.train_labels == k].mean(0) for k in range(data.num_classes)])
    test = test_images.reshape(len(test_images), -1).astype(np.float32)
    distances = (test ** 2).sum(1)[:, None] - 2 * test @ means.T + (means ** 2).sum(1)[None]
    return float((distances.argmin(1) == data.test_labels).mean())


def test_shapes_names_and_balance():
    data = make_synthetic(300, 100, 10)
    assert data.train_images.shape == (300, 32, 32, 3) and data.train_images.dtype == np.uint8
    assert data.test_images.shape == (100, 32, 32, 3)
    assert data.train_labels.dtype == np.int32
    assert data.class_names == tuple(f"class_{i:02d}" for i in range(10))
    assert np.bincount(data.train_labels).tolist() == [30] * 10
    assert data.train_images.std() > 20  # not a blank image


def test_deterministic_and_independent_of_global_rng():
    np.random.seed(0)
    random.seed(0)
    first = make_synthetic(64, 32, 10)
    np.random.seed(123)
    random.seed(123)
    np.random.rand(1000)
    second = make_synthetic(64, 32, 10)
    np.testing.assert_array_equal(first.train_images, second.train_images)
    np.testing.assert_array_equal(first.test_images, second.test_images)
    np.testing.assert_array_equal(first.train_labels, second.train_labels)
    assert not np.array_equal(first.train_images[:32], first.test_images)  # splits differ


def test_classes_are_separable_even_after_crop_and_flip():
    data = make_synthetic(1000, 500, 10)
    assert _nearest_class_mean_accuracy(data, data.test_images) > 0.6  # chance is 0.1
    augmented = _augment(data.test_images, np.random.default_rng(0))
    assert _nearest_class_mean_accuracy(data, augmented) > 0.6


def test_a_hundred_classes_are_separable():
    data = make_synthetic(2000, 500, 100)
    assert _nearest_class_mean_accuracy(data, data.test_images) > 0.2  # chance is 0.01


def test_load_dataset_uses_the_config_sizes_and_classes():
    config = cifar_files.make_config(dataset="synthetic", num_classes=7, synthetic_train_size=70,
                                     synthetic_test_size=14)
    data = load_dataset(config)
    assert len(data.train_images) == 70 and len(data.test_images) == 14 and data.num_classes == 7
