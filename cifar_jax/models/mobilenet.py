"""CIFAR MobileNetV2 (kuangliu/pytorch-cifar, models/mobilenetv2.py).

A stride-1 stem, the second stage at stride 1 for 32x32 inputs, ReLU, a 1x1 conv
shortcut where a stride-1 block changes the width, PyTorch's default init. `width`
scales the channels (rounded to multiples of 8, as torchvision does); `dtype` is the
compute dtype, logits are float32; `norm` is the norm layer (layers.Norm).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from cifar_jax.models import layers

# (expansion, out channels, blocks, stride of the first block); kuangliu's CIFAR setting.
MOBILENET_V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class InvertedResidual(nn.Module):
    """1x1 expand, 3x3 depthwise (strided), 1x1 project; a residual at stride 1."""

    out: int
    expansion: int
    stride: int
    conv_bn: Callable = layers.conv_bn

    @nn.compact
    def __call__(self, x, train: bool, mask=None):
        planes = self.expansion * x.shape[-1]
        y = self.conv_bn(x, planes, 1, train, mask, act=nn.relu)
        y = self.conv_bn(y, planes, 3, train, mask, self.stride, groups=planes, act=nn.relu)
        y = self.conv_bn(y, self.out, 1, train, mask)
        if self.stride != 1:
            return y
        if x.shape[-1] != self.out:
            x = self.conv_bn(x, self.out, 1, train, mask)
        return x + y


class MobileNetV2(nn.Module):
    num_classes: int = 100
    width: float = 1.0
    dtype: Any = jnp.float32
    norm: layers.Norm = layers.BatchNorm

    @nn.compact
    def __call__(self, x, train: bool = False, mask: Optional[jax.Array] = None):
        conv_bn = functools.partial(layers.conv_bn, norm=self.norm, dtype=self.dtype)
        x = x.astype(self.dtype)
        x = conv_bn(x, layers.scaled(32, self.width, 8), 3, train, mask, act=nn.relu, name="stem")
        for expansion, out, blocks, stride in MOBILENET_V2_STAGES:
            for i in range(blocks):
                x = InvertedResidual(layers.scaled(out, self.width, 8), expansion, stride if i == 0 else 1,
                                     conv_bn)(x, train, mask)
        x = conv_bn(x, layers.scaled(1280, self.width, 8), 1, train, mask, act=nn.relu, name="head")
        return layers.classifier(jnp.mean(x, axis=(1, 2)), self.num_classes, self.dtype)
