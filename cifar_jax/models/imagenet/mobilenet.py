"""torchvision's ImageNet MobileNetV2 (torchvision/models/mobilenetv2.py), width 1.0.

3x3/2 stem to 32, 17 inverted residuals (1x1 expand, 3x3 depthwise, 1x1 project; ReLU6;
a residual where stride is 1 and the width stays), 1x1 conv to 1280, global average
pooling, Dropout(0.2), Linear. Init as torchvision: convs kaiming_normal fan_out, norms
ones/zeros, the Linear N(0, 0.01) with zero bias. Names follow torchvision's `features`
Sequential (`features_2_conv_1_0` is block 2's depthwise conv); `classifier.1` is
"classifier". Dropout draws from the 'dropout' RNG in training.
"""
from __future__ import annotations

import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from cifar_jax.models import layers
from cifar_jax.models.imagenet.common import FAN_OUT, conv_norm

# (expansion, out channels, blocks, stride of the first block): torchvision's setting.
STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
RENAMED = {"classifier.1": "classifier"}
LINEAR_INIT = nn.initializers.normal(0.01)


def _inverted_residual(x, prefix: str, out: int, expansion: int, stride: int, train: bool, mask, cn, norm, dtype):
    hidden = int(round(x.shape[-1] * expansion))
    y, i = x, 0  # i: the position in the block's `conv` Sequential
    if expansion != 1:
        y = cn(y, hidden, 1, train, mask, conv_name=f"{prefix}{i}_0", norm_name=f"{prefix}{i}_1", act=nn.relu6)
        i += 1
    y = cn(y, hidden, 3, train, mask, conv_name=f"{prefix}{i}_0", norm_name=f"{prefix}{i}_1", stride=stride,
           groups=hidden, act=nn.relu6)
    y = layers.conv(y, out, 1, dtype=dtype, kernel_init=FAN_OUT, name=f"{prefix}{i + 1}")
    y = norm(name=f"{prefix}{i + 2}")(y, train, mask)
    return x + y if stride == 1 and x.shape[-1] == out else y


class ImageNetMobileNetV2(nn.Module):
    num_classes: int = 1000
    width: float = 1.0  # fixed by the pretrained weights: models.build refuses anything else
    dtype: Any = jnp.float32
    norm: layers.Norm = layers.BatchNorm
    dropout: float = 0.2

    @nn.compact
    def __call__(self, x, train: bool = False, mask: Optional[jax.Array] = None):
        cn = functools.partial(conv_norm, norm=self.norm, dtype=self.dtype)
        x = x.astype(self.dtype)
        x = cn(x, 32, 3, train, mask, conv_name="features_0_0", norm_name="features_0_1", stride=2, act=nn.relu6)
        index = 1
        for expansion, out, blocks, stride in STAGES:
            for i in range(blocks):
                x = _inverted_residual(x, f"features_{index}_conv_", out, expansion, stride if i == 0 else 1,
                                       train, mask, cn, self.norm, self.dtype)
                index += 1
        x = cn(x, 1280, 1, train, mask, conv_name=f"features_{index}_0", norm_name=f"features_{index}_1",
               act=nn.relu6)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return layers.classifier(x, self.num_classes, self.dtype, kernel_init=LINEAR_INIT,
                                 bias_init=nn.initializers.zeros)
