"""airbench94's network (Keller Jordan, arXiv 2404.00498; cifar10-airbench, legacy/airbench94.py),
the model of the record-class CIFAR-10 recipe configs/fast.py.

    whiten: conv 2x2, 3 -> 24 channels, no padding, with bias (32x32 -> 31x31), GELU
    group1..group3 (widths 64, 256, 256): conv3x3 -> max-pool 2 -> BatchNorm -> GELU
                                          -> conv3x3 -> BatchNorm -> GELU   (convs without bias)
    max-pool 3 (the whole 3x3 map) -> flatten -> Linear(256, classes, no bias) -> x 1/9

Its pieces as airbench has them:
- BatchNorm: airbench's `batchnorm_momentum` 0.6 is the weight of the *old* running statistics
  (it hands PyTorch `momentum=1 - 0.6`), so here `layers.BatchNorm(momentum=0.4)`:
  new = 0.6 old + 0.4 batch; eps 1e-12. Its scale stays 1 in the recipe (frozen through
  `config.frozen_params`, cifar_jax.optim); its bias trains, in the recipe at 64x the lr.
- The whitening conv's kernel is set from the training images before the first step
  (`init_from_data`: the eigenvectors of the 2x2 patches' covariance, scaled by 1/sqrt(eigenvalue
  + eps), with their negatives) and frozen; its bias starts at zero and trains for the first
  `whiten_bias_epochs` (cifar_jax.optim).
- The 3x3 convs start as PyTorch's default init with their first `in_channels` filters replaced
  by identity maps (`dirac`: torch.nn.init.dirac_ on the first in_channels output filters).
- GELU is the exact one (erf), as torch.nn.GELU's default; the head is PyTorch's default
  Linear init.

1,972,792 parameters at 10 classes (the count of airbench94's torch definition: its frozen
whitening kernel and BatchNorm weights are parameters there too).
"""
from __future__ import annotations

import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from cifar_jax.models import layers

WIDTHS = (64, 256, 256)
WHITEN_KERNEL = 2
WHITEN_EPS = 5e-4
# airbench's BatchNorm: new = 0.6 old + 0.4 batch (PyTorch momentum 0.4), eps 1e-12.
AIRBENCH_NORM = functools.partial(layers.BatchNorm, momentum=0.4, epsilon=1e-12)


def gelu(x):
    """torch.nn.GELU(): the exact GELU (flax's default is the tanh approximation)."""
    return nn.gelu(x, approximate=False)


def dirac(fan_in: int) -> layers.Initializer:
    """PyTorch's default conv init, then `torch.nn.init.dirac_` on the first in_channels output
    filters: a fresh conv passes its first min(in, out) input channels through unchanged (a
    1 at the kernel's centre, zeros elsewhere) and the rest of its filters stay random."""
    base = layers.torch_uniform(fan_in)

    def init(key, shape, dtype=jnp.float32):
        kh, kw, cin, cout = shape
        n = min(cin, cout)
        identity = jnp.zeros((kh, kw, cin, n), dtype).at[kh // 2, kw // 2].set(jnp.eye(cin, n, dtype=dtype))
        return base(key, shape, dtype).at[..., :n].set(identity)

    return init


def max_pool2(x):
    """MaxPool2d(2) (odd sizes floored, as torch does), written as a reshape and a max: its
    gradient is elementwise, where reduce_window's is a select-and-scatter (docs/speed.md)."""
    n, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def patches(images: jax.Array, size: int = WHITEN_KERNEL) -> jax.Array:
    """Every size x size patch (stride 1, no padding) of NHWC `images`, flattened in the order
    of a conv kernel's (kh, kw, in) axes: (N * patches per image, size * size * C)."""
    n, h, w, c = images.shape
    taps = [images[:, dy : h - size + 1 + dy, dx : w - size + 1 + dx] for dy in range(size) for dx in range(size)]
    return jnp.stack(taps, axis=-2).reshape(-1, size * size * c)


@functools.partial(jax.jit, static_argnames=("size", "eps"))
def whitening_kernel(images: jax.Array, size: int = WHITEN_KERNEL, eps: float = WHITEN_EPS) -> jax.Array:
    """airbench's whitening filters for normalised NHWC float `images`: a (size, size, C, 2 * size^2 C)
    conv kernel whose first half are the eigenvectors v_k of the patches' (uncentred) covariance
    divided by sqrt(lambda_k + eps), largest eigenvalue first, and whose second half is their
    negatives. On the patches, the first half's outputs have covariance diag(lambda_k / (lambda_k
    + eps)): about the identity."""
    flat = patches(images.astype(jnp.float32), size)
    covariance = flat.T @ flat / flat.shape[0]
    eigenvalues, eigenvectors = jnp.linalg.eigh(covariance)  # ascending
    eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]
    filters = eigenvectors / jnp.sqrt(eigenvalues + eps)  # column k: filter k
    kernel = filters.reshape(size, size, images.shape[-1], -1)
    return jnp.concatenate([kernel, -kernel], axis=-1)


class ConvGroup(nn.Module):
    """conv3x3 -> max-pool 2 -> norm -> GELU -> conv3x3 -> norm -> GELU (airbench's ConvGroup)."""

    features: int
    norm: layers.Norm = AIRBENCH_NORM
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool, mask=None):
        conv = functools.partial(layers.conv, kernel=3, dtype=self.dtype)
        x = conv(x, self.features, kernel_init=dirac(x.shape[-1] * 9))
        x = max_pool2(x)
        x = gelu(self.norm()(x, train, mask))
        x = conv(x, self.features, kernel_init=dirac(x.shape[-1] * 9))
        return gelu(self.norm()(x, train, mask))


class AirBench94(nn.Module):
    """airbench94's network (see the module doc); NHWC float images in, float32 logits out.

    `width` scales the three groups' widths (64, 256, 256; `layers.scaled`); the whitening conv
    keeps its 24 channels. `dtype` is the compute dtype; parameters, BatchNorm statistics and
    logits stay float32. `norm` is airbench's BatchNorm (momentum 0.4 in PyTorch's convention,
    eps 1e-12) unless another is given.
    """

    num_classes: int = 10
    width: float = 1.0
    dtype: Any = jnp.float32
    norm: layers.Norm = AIRBENCH_NORM
    logit_scale: float = 1 / 9
    whiten_eps: float = WHITEN_EPS

    @nn.compact
    def __call__(self, x, train: bool = False, mask: Optional[jax.Array] = None):
        x = x.astype(self.dtype)
        x = layers.conv(x, 2 * x.shape[-1] * WHITEN_KERNEL**2, WHITEN_KERNEL, bias=True, dtype=self.dtype,
                        padding=0, bias_init=nn.initializers.zeros, name="whiten")
        x = gelu(x)
        for i, features in enumerate(WIDTHS):
            x = ConvGroup(layers.scaled(features, self.width), self.norm, self.dtype, name=f"group{i + 1}")(
                x, train, mask)
        x = layers.max_pool(x, 3)
        x = x.reshape((x.shape[0], -1))
        logits = nn.Dense(self.num_classes, use_bias=False, dtype=self.dtype,
                          kernel_init=layers.torch_uniform(x.shape[-1]), name="classifier")(x)
        return logits.astype(jnp.float32) * self.logit_scale

    def init_from_data(self, params: dict, images: jax.Array) -> dict:
        """`params` with the whitening kernel computed from normalised NHWC float training
        `images` (airbench uses 5,000 of them): `whitening_kernel`. Called once, before the
        first step (cifar_jax.steps.init_from_data)."""
        kernel = whitening_kernel(images, WHITEN_KERNEL, self.whiten_eps)
        return {**params, "whiten": {**params["whiten"], "kernel": kernel.astype(params["whiten"]["kernel"].dtype)}}
