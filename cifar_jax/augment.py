"""On-device augmentation: the seed's RandomCrop(32, padding=4, reflect) + flip + Normalize,
the resize to a pretrained model's input size (`config.image_size`), airbench's alternating
flip, and test-time augmentation (`tta_logits`: mirror and translated views averaged)."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp

PAD = 4


def reflect_pad(images: jax.Array, pad: int = PAD) -> jax.Array:
    """Pads H and W of (N, H, W, C) images by mirroring, without repeating the edge pixel."""
    return jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


def random_crop(rng: jax.Array, images: jax.Array, pad: int = PAD) -> jax.Array:
    """A crop of the original size from a reflect-pad of `pad`, at an offset drawn per example
    (uniform over all (2*pad+1)^2 positions): a random translation by up to `pad` pixels."""
    n, h, w, c = images.shape
    offsets = jax.random.randint(rng, (n, 2), 0, 2 * pad + 1)
    padded = reflect_pad(images, pad)

    def crop(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, c))

    return jax.vmap(crop)(padded, offsets)


def flip(images: jax.Array, flips: jax.Array) -> jax.Array:
    """(N, H, W, C) images, those where `flips` (N,) is True mirrored left-right."""
    return jnp.where(flips[:, None, None, None], images[:, :, ::-1, :], images)


def augment(rng: jax.Array, images: jax.Array, pad: int = PAD, flips: Optional[jax.Array] = None) -> jax.Array:
    """Random crop of the original size from a reflect-pad of `pad`, then a flip with p=0.5.

    Each example draws its own offset (uniform over all (2*pad+1)^2 positions) and
    its own flip; given `flips` (N,) bool, those are the flips instead (alternating_flips).
    `pad` 0 crops nothing. Works on any dtype; the train step feeds uint8 and normalises after.
    """
    crop_key, flip_key = jax.random.split(rng)
    if flips is None:
        flips = jax.random.bernoulli(flip_key, 0.5, (images.shape[0],))
    cropped = random_crop(crop_key, images, pad) if pad else images
    return flip(cropped, flips)


def alternating_flips(key: jax.Array, indices: jax.Array, epoch) -> jax.Array:
    """airbench's alternating flip: which of the examples `indices` (dataset indices, (N,)) are
    mirrored in `epoch`. In epoch 0 each example is flipped with p=0.5, drawn from `key` and its
    index alone; every later epoch flips exactly the examples the epoch before did not (the
    epoch-0 choice, inverted on odd epochs), so each image is seen both ways within two epochs."""
    first = jax.vmap(lambda i: jax.random.bernoulli(jax.random.fold_in(key, i)))(indices)
    return first ^ (jnp.asarray(epoch) % 2 == 1)


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


TTA_LEVELS = (0, 1, 2)


def tta_views(images: jax.Array, level: int) -> list[tuple[float, jax.Array]]:
    """airbench's test-time views of NHWC `images` with their weights (summing to 1):
    level 0: the images; 1: they and their mirror images, 1/2 each; 2: those two at 1/4 each,
    and the mirror pair of each of two translations by one pixel (down-right and up-left, from
    a reflect-pad of 1) at 1/8 each."""
    if level not in TTA_LEVELS:
        raise ValueError(f"tta level {level!r}: use 0 (none), 1 (mirror) or 2 (mirror and translate)")
    if level == 0:
        return [(1.0, images)]
    mirror = lambda x: x[:, :, ::-1, :]  # noqa: E731
    if level == 1:
        return [(0.5, images), (0.5, mirror(images))]
    h, w = images.shape[1:3]
    padded = reflect_pad(images, 1)
    shifted = [padded[:, :h, :w], padded[:, 2 : h + 2, 2 : w + 2]]
    return [(0.25, images), (0.25, mirror(images))] + [(0.125, v) for x in shifted for v in (x, mirror(x))]


def tta_logits(logits_fn: Callable[[jax.Array], jax.Array], images: jax.Array, level: int) -> jax.Array:
    """The weighted mean of `logits_fn` over `tta_views(images, level)`, run as one batch of all
    the views (in inference mode a batch's examples do not interact). Level 0 is
    `logits_fn(images)` itself."""
    if level == 0:
        return logits_fn(images)
    views = tta_views(images, level)
    logits = logits_fn(jnp.concatenate([view for _, view in views]))
    logits = logits.reshape(len(views), images.shape[0], *logits.shape[1:])
    return jnp.tensordot(jnp.asarray([weight for weight, _ in views], logits.dtype), logits, axes=1)
