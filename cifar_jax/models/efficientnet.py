"""CIFAR EfficientNet-B0: torchvision's efficientnet_b0 with the stem at stride 1.

MBConv with squeeze-excitation, SiLU, stochastic depth rising linearly to 0.2, dropout
0.2 before the classifier, torchvision's init; the stride-1 stem makes 32x32 inputs reach
a 2x2 map. `width` scales the channels (rounded to multiples of 8, as torchvision does);
`dtype` is the compute dtype, logits are float32; `norm` is the norm layer (layers.Norm).
Dropout and stochastic depth draw from the 'dropout' RNG stream in training only.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from cifar_jax.models import layers

# (expansion, kernel, stride, out channels, blocks): torchvision's efficientnet_b0 stages.
EFFICIENTNET_B0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
# torchvision: kaiming_normal_(mode="fan_out") for convs, zero biases.
FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def linear_init(num_classes: int) -> layers.Initializer:
    """torchvision's Linear init for EfficientNet: U(-1/sqrt(out_features), 1/sqrt(out_features))."""
    bound = num_classes ** -0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class MBConv(nn.Module):
    """[1x1 expand] -> depthwise kxk (strided) -> squeeze-excitation -> 1x1 project, with
    stochastic depth on the residual. `conv`, `conv_bn`: layers' helpers with the model's
    settings fixed."""

    out: int
    expansion: int
    kernel: int
    stride: int
    drop_rate: float
    conv: Callable = layers.conv
    conv_bn: Callable = layers.conv_bn

    @nn.compact
    def __call__(self, x, train: bool, mask=None):
        channels = x.shape[-1]
        expanded = layers.scaled(channels, self.expansion, 8)
        y = x
        if expanded != channels:
            y = self.conv_bn(y, expanded, 1, train, mask, act=nn.silu)
        y = self.conv_bn(y, expanded, self.kernel, train, mask, self.stride, groups=expanded, act=nn.silu)
        # Squeeze-excitation to max(1, input channels // 4), as torchvision.
        s = jnp.mean(y, axis=(1, 2), keepdims=True)
        s = nn.silu(self.conv(s, max(1, channels // 4), 1, bias=True))
        y = y * nn.sigmoid(self.conv(s, expanded, 1, bias=True))
        y = self.conv_bn(y, self.out, 1, train, mask)
        if self.stride != 1 or channels != self.out:
            return y
        if train and self.drop_rate > 0:
            y = layers.stochastic_depth(y, self.drop_rate, self.make_rng("dropout"))
        return x + y


class EfficientNetB0(nn.Module):
    num_classes: int = 100
    width: float = 1.0
    dtype: Any = jnp.float32
    norm: layers.Norm = layers.BatchNorm
    dropout: float = 0.2
    stochastic_depth: float = 0.2

    @nn.compact
    def __call__(self, x, train: bool = False, mask: Optional[jax.Array] = None):
        conv = functools.partial(layers.conv, dtype=self.dtype, kernel_init=FAN_OUT)
        conv_bn = functools.partial(layers.conv_bn, norm=self.norm, dtype=self.dtype, kernel_init=FAN_OUT)
        x = x.astype(self.dtype)
        x = conv_bn(x, layers.scaled(32, self.width, 8), 3, train, mask, act=nn.silu, name="stem")
        total = sum(stage[-1] for stage in EFFICIENTNET_B0_STAGES)
        index = 0
        for expansion, kernel, stride, out, blocks in EFFICIENTNET_B0_STAGES:
            for i in range(blocks):
                rate = self.stochastic_depth * index / total
                x = MBConv(layers.scaled(out, self.width, 8), expansion, kernel, stride if i == 0 else 1, rate,
                           conv, conv_bn)(x, train, mask)
                index += 1
        x = conv_bn(x, 4 * x.shape[-1], 1, train, mask, act=nn.silu, name="head")
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return layers.classifier(x, self.num_classes, self.dtype, kernel_init=linear_init(self.num_classes),
                                 bias_init=nn.initializers.zeros)
