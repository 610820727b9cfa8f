"""The seed report's ResNet9, with PyTorch's BatchNorm and initialisation.

Its parameter tree is the one cifar_jax.convert maps to the PyTorch state_dict keys
(`params/conv1/Conv_0/kernel`, `params/res1/ConvBlock_0/BatchNorm_0/scale`, ...).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from cifar_jax.models import layers

# Channel widths of the seed's ResNet9 at width=1.0 (conv1, conv2, conv3, conv4, conv5).
SEED_WIDTHS = (32, 64, 128, 256, 512)


def seed_channels(width: float = 1.0) -> tuple[int, ...]:
    """Channel counts (conv1 .. conv5) of the ResNet9 at `width`: max(1, round(c * width))."""
    return tuple(max(1, round(c * width)) for c in SEED_WIDTHS)


class ConvBlock(nn.Module):
    """Conv3x3 (padding 1, bias) -> norm -> ReLU [-> MaxPool 2], the seed's conv_block.

    `conv_bn` is layers.conv_bn with the model's settings (norm, dtype) already fixed.
    """

    features: int
    pool: bool = False
    conv_bn: Callable = layers.conv_bn

    @nn.compact
    def __call__(self, x, train: bool, mask=None):
        x = self.conv_bn(x, self.features, 3, train, mask, bias=True, act=nn.relu)
        return layers.max_pool(x) if self.pool else x


class Residual(nn.Module):
    """Two conv blocks whose output is added to their input (the seed's res1/res2/res3)."""

    features: int
    conv_bn: Callable = layers.conv_bn

    @nn.compact
    def __call__(self, x, train: bool, mask=None):
        y = ConvBlock(self.features, conv_bn=self.conv_bn)(x, train, mask)
        y = ConvBlock(self.features, conv_bn=self.conv_bn)(y, train, mask)
        return x + y


class ResNet9(nn.Module):
    """The seed report's ResNet9; input NHWC float images, output logits.

    width scales every channel count: 1.0 is the seed's model (7,598,820 parameters
    at 100 classes), 2.0 the wider original it was halved from. `dtype` is the compute
    dtype (e.g. bfloat16); parameters, BatchNorm statistics and logits stay float32.
    `norm` is the norm layer (layers.Norm), PyTorch-semantics BatchNorm by default.
    """

    num_classes: int = 100
    width: float = 1.0
    dtype: Any = jnp.float32
    norm: layers.Norm = layers.BatchNorm

    @nn.compact
    def __call__(self, x, train: bool = False, mask: Optional[jax.Array] = None):
        c1, c2, c3, c4, c5 = seed_channels(self.width)
        conv_bn = functools.partial(layers.conv_bn, norm=self.norm, dtype=self.dtype)
        block = functools.partial(ConvBlock, conv_bn=conv_bn)
        residual = functools.partial(Residual, conv_bn=conv_bn)
        x = x.astype(self.dtype)
        x = block(c1, name="conv1")(x, train, mask)
        x = block(c2, pool=True, name="conv2")(x, train, mask)
        x = residual(c2, name="res1")(x, train, mask)
        x = block(c3, pool=True, name="conv3")(x, train, mask)
        x = block(c4, pool=True, name="conv4")(x, train, mask)
        x = residual(c4, name="res2")(x, train, mask)
        x = block(c5, pool=True, name="conv5")(x, train, mask)
        x = residual(c5, name="res3")(x, train, mask)
        # Classifier: MaxPool 2 -> flatten -> Linear (on 32x32 inputs the map is 1x1 here).
        x = layers.max_pool(x)
        return layers.classifier(x.reshape((x.shape[0], -1)), self.num_classes, self.dtype)
