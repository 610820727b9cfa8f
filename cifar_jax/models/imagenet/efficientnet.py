"""torchvision's ImageNet EfficientNet-B0 (torchvision/models/efficientnet.py).

3x3/2 stem to 32 (SiLU), 16 MBConv blocks ([1x1 expand], depthwise kxk, squeeze-excitation
with biases, 1x1 project; per-sample stochastic depth rising linearly to 0.2 on the
residuals), 1x1 conv to 1280, global average pooling, Dropout(0.2), Linear. Init as
torchvision: convs kaiming_normal fan_out with zero bias, norms ones/zeros, the Linear
U(-1/sqrt(classes), 1/sqrt(classes)) with zero bias. Names follow torchvision's
(`features_2_0_block_1_0` is stage 2 block 0's depthwise conv, `..._block_2_fc1` its
squeeze conv); `classifier.1` is "classifier". Dropout and stochastic depth draw from
the 'dropout' RNG in training.
"""
from __future__ import annotations

import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from cifar_jax.models import layers
from cifar_jax.models.efficientnet import EFFICIENTNET_B0_STAGES, linear_init
from cifar_jax.models.imagenet.common import FAN_OUT, conv_norm

RENAMED = {"classifier.1": "classifier"}


def _mbconv(x, prefix: str, out: int, expansion: int, kernel: int, stride: int, drop_rate: float, train: bool,
            mask, rng, cn, dtype):
    channels = x.shape[-1]
    expanded = layers.scaled(channels, expansion, 8)
    y, i = x, 0  # i: the position in the block's `block` Sequential
    if expanded != channels:
        y = cn(y, expanded, 1, train, mask, conv_name=f"{prefix}{i}_0", norm_name=f"{prefix}{i}_1", act=nn.silu)
        i += 1
    y = cn(y, expanded, kernel, train, mask, conv_name=f"{prefix}{i}_0", norm_name=f"{prefix}{i}_1",
           stride=stride, groups=expanded, act=nn.silu)
    conv = functools.partial(layers.conv, kernel=1, bias=True, dtype=dtype, kernel_init=FAN_OUT)
    s = jnp.mean(y, axis=(1, 2), keepdims=True)  # squeeze-excitation to max(1, channels // 4)
    s = nn.silu(conv(s, max(1, channels // 4), name=f"{prefix}{i + 1}_fc1"))
    y = y * nn.sigmoid(conv(s, expanded, name=f"{prefix}{i + 1}_fc2"))
    y = cn(y, out, 1, train, mask, conv_name=f"{prefix}{i + 2}_0", norm_name=f"{prefix}{i + 2}_1")
    if stride != 1 or channels != out:
        return y
    if train and drop_rate > 0:
        y = layers.stochastic_depth(y, drop_rate, rng)
    return x + y


class ImageNetEfficientNetB0(nn.Module):
    num_classes: int = 1000
    width: float = 1.0  # fixed by the pretrained weights: models.build refuses anything else
    dtype: Any = jnp.float32
    norm: layers.Norm = layers.BatchNorm
    dropout: float = 0.2
    stochastic_depth: float = 0.2

    @nn.compact
    def __call__(self, x, train: bool = False, mask: Optional[jax.Array] = None):
        cn = functools.partial(conv_norm, norm=self.norm, dtype=self.dtype)
        rng = self.make_rng("dropout") if train and self.stochastic_depth > 0 else None
        x = x.astype(self.dtype)
        x = cn(x, 32, 3, train, mask, conv_name="features_0_0", norm_name="features_0_1", stride=2, act=nn.silu)
        total = sum(stage[-1] for stage in EFFICIENTNET_B0_STAGES)
        index = 0
        for stage, (expansion, kernel, stride, out, blocks) in enumerate(EFFICIENTNET_B0_STAGES):
            for i in range(blocks):
                block_rng = None if rng is None else jax.random.fold_in(rng, index)
                x = _mbconv(x, f"features_{stage + 1}_{i}_block_", out, expansion, kernel, stride if i == 0 else 1,
                            self.stochastic_depth * index / total, train, mask, block_rng, cn, self.dtype)
                index += 1
        last = len(EFFICIENTNET_B0_STAGES) + 1
        x = cn(x, 4 * x.shape[-1], 1, train, mask, conv_name=f"features_{last}_0", norm_name=f"features_{last}_1",
               act=nn.silu)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return layers.classifier(x, self.num_classes, self.dtype, kernel_init=linear_init(self.num_classes),
                                 bias_init=nn.initializers.zeros)
