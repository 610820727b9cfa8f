"""The one place where a decoded image becomes a 32x32 RGB uint8 array.

The recipe (crop padding, ResNet9's pooling) is built for CIFAR's 32x32 images, so
image_folder and TFDS images of any other size are resized here, with Pillow's BILINEAR
filter, and grayscale / palette / RGBA images are converted to RGB (alpha dropped).
"""
from __future__ import annotations

import numpy as np
from PIL import Image

IMAGE_SIZE = 32


def to_rgb32(image: Image.Image) -> np.ndarray:
    """(32, 32, 3) uint8 array of a Pillow image; a no-copy path for CIFAR-sized RGB."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != (IMAGE_SIZE, IMAGE_SIZE):
        image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(image)


def array_to_rgb32(array: np.ndarray) -> np.ndarray:
    """Same as `to_rgb32` for an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8 array."""
    if array.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and array.dtype == np.uint8:
        return array
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return to_rgb32(Image.fromarray(np.asarray(array, dtype=np.uint8)))
