"""The seed's ResNet9 as a Flax linen module, with PyTorch's BatchNorm and initialisation."""
from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

# Channel widths of the seed's ResNet9 at width=1.0 (conv1, conv2, conv3, conv4, conv5).
SEED_WIDTHS = (32, 64, 128, 256, 512)


def _torch_uniform(fan_in: int):
    """PyTorch's default Conv/Linear init: weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    (kaiming_uniform with a=sqrt(5) reduces to this bound for the weights.)
    """
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class BatchNorm(nn.Module):
    """BatchNorm2d with PyTorch semantics.

    `momentum` is PyTorch's (new = (1 - m) * old + m * batch); the running variance
    is updated with the unbiased batch variance while the batch is normalised with
    the biased one, as torch does. `mask` (N,) excludes padded examples from the
    batch statistics, so a padded last batch behaves like the short batch it stands for.
    """

    momentum: float = 0.1
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x, train: bool, mask: Optional[jax.Array] = None):
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,))
        bias = self.param("bias", nn.initializers.zeros, (features,))
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)

        if train:
            xf = x.astype(jnp.float32)
            axes = tuple(range(x.ndim - 1))
            per_example = math.prod(x.shape[1:-1])
            if mask is None:
                count = x.shape[0] * per_example
                mean = jnp.mean(xf, axes)
                var = jnp.mean(jnp.square(xf - mean), axes)
            else:
                weight = mask.astype(jnp.float32).reshape((-1,) + (1,) * (x.ndim - 1))
                count = jnp.sum(weight) * per_example
                mean = jnp.sum(xf * weight, axes) / count
                var = jnp.sum(jnp.square(xf - mean) * weight, axes) / count
            if not self.is_initializing():
                unbiased = var * count / jnp.maximum(count - 1, 1)
                ra_mean.value = (1 - self.momentum) * ra_mean.value + self.momentum * mean
                ra_var.value = (1 - self.momentum) * ra_var.value + self.momentum * unbiased
        else:
            mean, var = ra_mean.value, ra_var.value

        inv = jax.lax.rsqrt(var + self.epsilon) * scale
        return ((x - mean) * inv + bias).astype(x.dtype)


class ConvBlock(nn.Module):
    """Conv3x3 (padding 1, bias) -> BatchNorm -> ReLU [-> MaxPool 2], the seed's conv_block."""

    features: int
    pool: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool, mask=None):
        fan_in = x.shape[-1] * 9
        x = nn.Conv(
            self.features,
            (3, 3),
            padding=1,
            dtype=self.dtype,
            kernel_init=_torch_uniform(fan_in),
            bias_init=_torch_uniform(fan_in),
        )(x)
        x = BatchNorm()(x, train, mask)
        x = nn.relu(x)
        if self.pool:
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        return x


class Residual(nn.Module):
    """Two conv blocks whose output is added to their input (the seed's res1/res2/res3)."""

    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool, mask=None):
        y = ConvBlock(self.features, dtype=self.dtype)(x, train, mask)
        y = ConvBlock(self.features, dtype=self.dtype)(y, train, mask)
        return x + y


class ResNet9(nn.Module):
    """The seed report's ResNet9; input NHWC float images, output logits.

    width scales every channel count: 1.0 is the seed's model (7,598,820 parameters
    at 100 classes), 2.0 the wider original it was halved from. `dtype` is the compute
    dtype (e.g. bfloat16); parameters, BatchNorm statistics and logits stay float32.
    """

    num_classes: int = 100
    width: float = 1.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False, mask: Optional[jax.Array] = None):
        c1, c2, c3, c4, c5 = (max(1, round(c * self.width)) for c in SEED_WIDTHS)
        dt = self.dtype
        x = x.astype(dt)
        x = ConvBlock(c1, dtype=dt, name="conv1")(x, train, mask)
        x = ConvBlock(c2, pool=True, dtype=dt, name="conv2")(x, train, mask)
        x = Residual(c2, dtype=dt, name="res1")(x, train, mask)
        x = ConvBlock(c3, pool=True, dtype=dt, name="conv3")(x, train, mask)
        x = ConvBlock(c4, pool=True, dtype=dt, name="conv4")(x, train, mask)
        x = Residual(c4, dtype=dt, name="res2")(x, train, mask)
        x = ConvBlock(c5, pool=True, dtype=dt, name="conv5")(x, train, mask)
        x = Residual(c5, dtype=dt, name="res3")(x, train, mask)
        # Classifier: MaxPool 2 -> flatten -> Linear (on 32x32 inputs the map is 1x1 here).
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        fan_in = x.shape[-1]
        logits = nn.Dense(
            self.num_classes,
            dtype=dt,
            kernel_init=_torch_uniform(fan_in),
            bias_init=_torch_uniform(fan_in),
            name="classifier",
        )(x)
        return logits.astype(jnp.float32)
