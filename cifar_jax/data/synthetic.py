"""`dataset="synthetic"`: an offline, deterministic, learnable stand-in for CIFAR.

Each class has a colour and a stripe pattern (a frequency and a direction). Every image
gets its own random stripe phase, colour jitter and pixel noise, so the class is told by
the colour and by the stripes' frequency and direction, which survive the training
augmentation: a random crop after 4-pixel padding only shifts the phase, and a horizontal
flip mirrors the direction but keeps the colour and frequency.
"""
from __future__ import annotations

import numpy as np

from cifar_jax.data.pixels import IMAGE_SIZE
from cifar_jax.data.types import Dataset

_PROTOTYPE_SEED = 1234  # class colours and patterns depend on num_classes only
_TRAIN_SEED, _TEST_SEED = 1, 2


def make_synthetic(train_size: int, test_size: int, num_classes: int) -> Dataset:
    """Same arguments -> same arrays, whatever the global numpy / Python RNG state."""
    prototypes = np.random.default_rng([_PROTOTYPE_SEED, num_classes])
    colours = prototypes.uniform(50, 205, size=(num_classes, 3))
    frequencies = prototypes.uniform(1.0, 4.0, size=num_classes)  # cycles across the image
    angles = prototypes.uniform(0, np.pi / 2, size=num_classes)
    classes = (colours, frequencies, angles)
    train = _sample(np.random.default_rng([_TRAIN_SEED, train_size, num_classes]), train_size, classes)
    test = _sample(np.random.default_rng([_TEST_SEED, test_size, num_classes]), test_size, classes)
    names = tuple(f"class_{i:02d}" for i in range(num_classes))
    return Dataset(*train, *test, class_names=names)


def _sample(rng, size, classes, chunk=4096):
    colours, frequencies, angles = classes
    labels = rng.permutation(np.arange(size) % len(colours)).astype(np.int32)  # balanced
    phases = rng.uniform(0, 2 * np.pi, size=size)
    jitter = rng.normal(0, 10, size=(size, 3))
    y, x = np.meshgrid(np.arange(IMAGE_SIZE), np.arange(IMAGE_SIZE), indexing="ij")
    images = np.empty((size, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    for start in range(0, size, chunk):  # in chunks, so large sizes need little memory
        k = labels[start:start + chunk]
        along = np.cos(angles[k])[:, None, None] * x + np.sin(angles[k])[:, None, None] * y
        stripes = np.sin(2 * np.pi * frequencies[k, None, None] * along / IMAGE_SIZE
                         + phases[start:start + chunk, None, None])
        noise = rng.standard_normal((len(k), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32)
        colour = (colours[k] + jitter[start:start + chunk])[:, None, None, :]
        pixels = colour + 45 * stripes[..., None] + 20 * noise
        images[start:start + chunk] = np.clip(np.rint(pixels), 0, 255)
    return images, labels
