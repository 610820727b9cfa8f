"""CIFAR VGG16 with BatchNorm (kuangliu/pytorch-cifar, models/vgg.py).

13 conv3x3 (bias) + norm + ReLU, five max-pools down to 1x1, one Linear(512, classes)
(no 4096-wide ImageNet classifier); PyTorch's default init. `width` scales the channels,
`dtype` is the compute dtype, logits are float32; `norm` is the norm layer (layers.Norm).
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from cifar_jax.models import layers

VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16(nn.Module):
    """kuangliu's CIFAR VGG16 (`VGG('VGG16')`)."""

    num_classes: int = 100
    width: float = 1.0
    dtype: Any = jnp.float32
    norm: layers.Norm = layers.BatchNorm

    @nn.compact
    def __call__(self, x, train: bool = False, mask: Optional[jax.Array] = None):
        x = x.astype(self.dtype)
        for layer in VGG16_LAYERS:
            if layer == "M":
                x = layers.max_pool(x)
            else:
                x = layers.conv_bn(x, layers.scaled(layer, self.width), 3, train, mask, bias=True, act=nn.relu,
                                   norm=self.norm, dtype=self.dtype)
        x = x.reshape((x.shape[0], -1))
        return layers.classifier(x, self.num_classes, self.dtype)
