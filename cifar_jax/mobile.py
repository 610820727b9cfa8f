"""CIFAR MobileNetV2 and EfficientNet-B0 as Flax linen modules.

MobileNetV2 follows kuangliu/pytorch-cifar models/mobilenetv2.py (stride-1 stem, the
second stage at stride 1 for 32x32 inputs, ReLU, a 1x1 conv shortcut where a stride-1
block changes the width, PyTorch's default init). EfficientNet-B0 follows torchvision's
efficientnet_b0 (MBConv with squeeze-excitation, SiLU, stochastic depth rising linearly
to 0.2, dropout 0.2 before the classifier, torchvision's init) with the stem at stride 1,
so 32x32 inputs reach a 2x2 map. Both use cifar_jax.models.BatchNorm; `width` scales the
channels (rounded to multiples of 8, as torchvision does); `dtype` is the compute dtype.
Dropout and stochastic depth draw from the 'dropout' RNG stream in training only.
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from cifar_jax.resnets import classifier, conv, conv_bn, scaled

# (expansion, out channels, blocks, stride of the first block); kuangliu's CIFAR setting.
MOBILENET_V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class InvertedResidual(nn.Module):
    out: int
    expansion: int
    stride: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool, mask=None):
        dt, planes = self.dtype, self.expansion * x.shape[-1]
        y = conv_bn(x, planes, 1, train, mask, dtype=dt, act=nn.relu)
        y = conv_bn(y, planes, 3, train, mask, self.stride, groups=planes, dtype=dt, act=nn.relu)
        y = conv_bn(y, self.out, 1, train, mask, dtype=dt)
        if self.stride != 1:
            return y
        if x.shape[-1] != self.out:
            x = conv_bn(x, self.out, 1, train, mask, dtype=dt)
        return x + y


class MobileNetV2(nn.Module):
    num_classes: int = 100
    width: float = 1.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False, mask: Optional[jax.Array] = None):
        dt = self.dtype
        x = x.astype(dt)
        x = conv_bn(x, scaled(32, self.width, 8), 3, train, mask, dtype=dt, act=nn.relu, name="stem")
        for expansion, out, blocks, stride in MOBILENET_V2_STAGES:
            for i in range(blocks):
                x = InvertedResidual(scaled(out, self.width, 8), expansion, stride if i == 0 else 1, dt)(x, train, mask)
        x = conv_bn(x, scaled(1280, self.width, 8), 1, train, mask, dtype=dt, act=nn.relu, name="head")
        return classifier(jnp.mean(x, axis=(1, 2)), self.num_classes, dt)


# (expansion, kernel, stride, out channels, blocks): torchvision's efficientnet_b0 stages.
EFFICIENTNET_B0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
# torchvision: kaiming_normal_(mode="fan_out") for convs, zero biases.
_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class MBConv(nn.Module):
    out: int
    expansion: int
    kernel: int
    stride: int
    drop_rate: float
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool, mask=None):
        dt, channels = self.dtype, x.shape[-1]
        expanded = scaled(channels, self.expansion, 8)
        y = x
        if expanded != channels:
            y = conv_bn(y, expanded, 1, train, mask, dtype=dt, kernel_init=_FAN_OUT, act=nn.silu)
        y = conv_bn(y, expanded, self.kernel, train, mask, self.stride, groups=expanded, dtype=dt,
                    kernel_init=_FAN_OUT, act=nn.silu)
        # Squeeze-excitation to max(1, input channels // 4), as torchvision.
        s = jnp.mean(y, axis=(1, 2), keepdims=True)
        s = nn.silu(conv(s, max(1, channels // 4), 1, bias=True, dtype=dt, kernel_init=_FAN_OUT))
        y = y * nn.sigmoid(conv(s, expanded, 1, bias=True, dtype=dt, kernel_init=_FAN_OUT))
        y = conv_bn(y, self.out, 1, train, mask, dtype=dt, kernel_init=_FAN_OUT)
        if self.stride != 1 or channels != self.out:
            return y
        if train and self.drop_rate > 0:  # stochastic depth, torchvision's "row" mode
            keep = 1.0 - self.drop_rate
            alive = jax.random.bernoulli(self.make_rng("dropout"), keep, (y.shape[0], 1, 1, 1))
            y = y * alive.astype(y.dtype) / jnp.asarray(keep, y.dtype)
        return x + y


class EfficientNetB0(nn.Module):
    num_classes: int = 100
    width: float = 1.0
    dtype: jnp.dtype = jnp.float32
    dropout: float = 0.2
    stochastic_depth: float = 0.2

    @nn.compact
    def __call__(self, x, train: bool = False, mask: Optional[jax.Array] = None):
        dt = self.dtype
        x = x.astype(dt)
        x = conv_bn(x, scaled(32, self.width, 8), 3, train, mask, dtype=dt, kernel_init=_FAN_OUT, act=nn.silu,
                    name="stem")
        total = sum(stage[-1] for stage in EFFICIENTNET_B0_STAGES)
        index = 0
        for expansion, kernel, stride, out, blocks in EFFICIENTNET_B0_STAGES:
            for i in range(blocks):
                rate = self.stochastic_depth * index / total
                x = MBConv(scaled(out, self.width, 8), expansion, kernel, stride if i == 0 else 1, rate, dt)(
                    x, train, mask)
                index += 1
        x = conv_bn(x, 4 * x.shape[-1], 1, train, mask, dtype=dt, kernel_init=_FAN_OUT, act=nn.silu, name="head")
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        # torchvision's Linear init: U(-1/sqrt(out_features), 1/sqrt(out_features)), zero bias.
        bound = self.num_classes ** -0.5
        logits = nn.Dense(self.num_classes, dtype=dt, name="classifier", bias_init=nn.initializers.zeros,
                          kernel_init=lambda k, s, d=jnp.float32: jax.random.uniform(k, s, d, -bound, bound))(x)
        return logits.astype(jnp.float32)
