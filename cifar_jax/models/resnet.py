"""CIFAR ResNet18/50/152 (kuangliu/pytorch-cifar, models/resnet.py).

The usual CIFAR adaptation: a stride-1 3x3 stem, no early max-pool, global average
pooling of the final 4x4 map, one Linear classifier; PyTorch's default init. `width`
scales every channel count (1.0 is the published model); `dtype` is the compute dtype,
logits are float32; `norm` is the norm layer (layers.Norm).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cifar_jax.models import layers


def _shortcut(x, features: int, stride: int, train: bool, mask, conv_bn: Callable):
    """Identity, or a strided 1x1 conv + norm where the block changes shape."""
    if stride == 1 and x.shape[-1] == features:
        return x
    return conv_bn(x, features, 1, train, mask, stride)


class BasicBlock(nn.Module):
    """Two 3x3 conv-norms and a shortcut (`conv_bn`: layers.conv_bn with norm and dtype fixed)."""

    planes: int
    stride: int = 1
    conv_bn: Callable = layers.conv_bn
    expansion = 1

    @nn.compact
    def __call__(self, x, train: bool, mask=None):
        y = self.conv_bn(x, self.planes, 3, train, mask, self.stride, act=nn.relu)
        y = self.conv_bn(y, self.planes, 3, train, mask)
        return nn.relu(_shortcut(x, self.planes, self.stride, train, mask, self.conv_bn) + y)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4, and a shortcut."""

    planes: int
    stride: int = 1
    conv_bn: Callable = layers.conv_bn
    expansion = 4

    @nn.compact
    def __call__(self, x, train: bool, mask=None):
        out = self.planes * self.expansion
        y = self.conv_bn(x, self.planes, 1, train, mask, act=nn.relu)
        y = self.conv_bn(y, self.planes, 3, train, mask, self.stride, act=nn.relu)
        y = self.conv_bn(y, out, 1, train, mask)
        return nn.relu(_shortcut(x, out, self.stride, train, mask, self.conv_bn) + y)


class ResNet(nn.Module):
    """kuangliu's CIFAR ResNet: stem conv3x3 64, four stages (64, 128, 256, 512 planes,
    strides 1, 2, 2, 2), average pool, Linear."""

    stage_sizes: Sequence[int]
    block: type = BasicBlock
    num_classes: int = 100
    width: float = 1.0
    dtype: Any = jnp.float32
    norm: layers.Norm = layers.BatchNorm

    @nn.compact
    def __call__(self, x, train: bool = False, mask: Optional[jax.Array] = None):
        conv_bn = functools.partial(layers.conv_bn, norm=self.norm, dtype=self.dtype)
        x = x.astype(self.dtype)
        x = conv_bn(x, layers.scaled(64, self.width), 3, train, mask, act=nn.relu, name="stem")
        for stage, (blocks, planes) in enumerate(zip(self.stage_sizes, (64, 128, 256, 512))):
            for i in range(blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                x = self.block(layers.scaled(planes, self.width), stride, conv_bn,
                               name=f"layer{stage + 1}_{i}")(x, train, mask)
        x = jnp.mean(x, axis=(1, 2))
        return layers.classifier(x, self.num_classes, self.dtype)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block=BasicBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=Bottleneck)
ResNet152 = functools.partial(ResNet, stage_sizes=(3, 8, 36, 3), block=Bottleneck)
