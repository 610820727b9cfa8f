"""On-device augmentation: the seed's RandomCrop(32, padding=4, reflect) + flip + Normalize,
and the resize to a pretrained model's input size (`config.image_size`)."""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

PAD = 4


def reflect_pad(images: jax.Array, pad: int = PAD) -> jax.Array:
    """Pads H and W of (N, H, W, C) images by mirroring, without repeating the edge pixel."""
    return jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


def augment(rng: jax.Array, images: jax.Array, pad: int = PAD) -> jax.Array:
    """Random crop of the original size from a reflect-pad of `pad`, then a flip with p=0.5.

    Each example draws its own offset (uniform over all (2*pad+1)^2 positions) and
    its own flip. Works on any dtype; the train step feeds uint8 and normalises after.
    """
    n, h, w, c = images.shape
    crop_key, flip_key = jax.random.split(rng)
    offsets = jax.random.randint(crop_key, (n, 2), 0, 2 * pad + 1)
    flips = jax.random.bernoulli(flip_key, 0.5, (n,))
    padded = reflect_pad(images, pad)

    def crop(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, c))

    cropped = jax.vmap(crop)(padded, offsets)
    return jnp.where(flips[:, None, None, None], cropped[:, :, ::-1, :], cropped)


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    """uint8 [0, 255] -> float32 (x/255 - mean) / std, as ToTensor + Normalize do."""
    x = images.astype(jnp.float32) / 255.0
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def resize(images: jax.Array, size: int) -> jax.Array:
    """(N, H, W, C) images resized to (N, size, size, C), bilinear; unchanged (the same array,
    no op) when already that size.

    `jax.image.resize` with half-pixel centres, as torch's `interpolate(mode="bilinear",
    align_corners=False)`, PIL's BILINEAR and torchvision's `Resize` use. Antialiasing is on
    (JAX's default, and torchvision's `Resize` default since 0.17; PIL always filters): it
    widens the filter only when shrinking, so upsampling CIFAR's 32x32 to 224 is the plain
    bilinear interpolation either way. Float images stay unrounded (a PIL resize returns
    uint8, rounding each pixel to 1/255).
    """
    n, h, w, c = images.shape
    if (h, w) == (size, size):
        return images
    return jax.image.resize(images, (n, size, size, c), method="bilinear", antialias=True)


def model_input(images: jax.Array, mean: Sequence[float], std: Sequence[float], size: int) -> jax.Array:
    """uint8 images -> what the model sees: `normalize`, then `resize` to size x size.

    Normalising first touches 49 times fewer pixels at 32 -> 224; both steps are linear
    per channel (a bilinear pixel is a weighted mean of input pixels, weights summing to
    1), so the other order gives the same values up to float rounding.
    """
    return resize(normalize(images, mean, std), size)
