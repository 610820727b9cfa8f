"""EfficientNet-B0 in torchvision's layout (torchvision/models/efficientnet.py), with a CIFAR or
an ImageNet stem.

3x3 stem conv to 32 (SiLU), 16 MBConv blocks ([1x1 expand], depthwise kxk, squeeze-excitation
with biases, 1x1 project; per-sample stochastic depth rising linearly to 0.2 on the
residuals), 1x1 conv to 4x the channels (1280), global average pooling, Dropout(0.2), Linear.
`stem` "imagenet" is torchvision's stride-2 stem conv; "cifar" the same conv at stride 1, the
only difference of the zoo's CIFAR variant (a 32x32 image reaches a 2x2 map).
`initialization`: "torchvision" (convs kaiming-normal fan-out with zero bias, the Linear
U(+-1/sqrt(classes)) with zero bias; both variants use it) or "pytorch". `width` scales the
channels (multiples of 8, as torchvision's `_make_divisible`).

Names follow torchvision's (`features_2_0_block_1_0` is stage 2 block 0's depthwise conv,
`..._block_2_fc1` its squeeze conv); `classifier.1` is "classifier". Dropout and stochastic
depth draw from the 'dropout' RNG in training.
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
RENAMED = {"classifier.1": "classifier"}


def linear_init(num_classes: int) -> layers.Initializer:
    """torchvision's Linear init for EfficientNet: U(-1/sqrt(out_features), 1/sqrt(out_features))."""
    bound = num_classes ** -0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _mbconv(x, prefix: str, out: int, expansion: int, kernel: int, stride: int, drop_rate: float, train: bool,
            mask, rng, cn: Callable, conv: Callable):
    """One block named `prefix` ("features_2_0_block_"); `cn`, `conv`: layers.conv_bn and
    layers.conv with the model's settings."""
    channels = x.shape[-1]
    expanded = layers.scaled(channels, expansion, 8)
    y, i = x, 0  # i: the position in the block's `block` Sequential
    if expanded != channels:
        y = cn(y, expanded, 1, train, mask, act=nn.silu, name=f"{prefix}{i}_0", norm_name=f"{prefix}{i}_1")
        i += 1
    y = cn(y, expanded, kernel, train, mask, stride, groups=expanded, act=nn.silu, name=f"{prefix}{i}_0",
           norm_name=f"{prefix}{i}_1")
    s = jnp.mean(y, axis=(1, 2), keepdims=True)  # squeeze-excitation to max(1, channels // 4)
    s = nn.silu(conv(s, max(1, channels // 4), 1, bias=True, name=f"{prefix}{i + 1}_fc1"))
    y = y * nn.sigmoid(conv(s, expanded, 1, bias=True, name=f"{prefix}{i + 1}_fc2"))
    y = cn(y, out, 1, train, mask, name=f"{prefix}{i + 2}_0", norm_name=f"{prefix}{i + 2}_1")
    if stride != 1 or channels != out:
        return y
    if train and drop_rate > 0:
        y = layers.stochastic_depth(y, drop_rate, rng)
    return x + y


class EfficientNetB0(nn.Module):
    num_classes: int = 100
    width: float = 1.0
    dtype: Any = jnp.float32
    norm: layers.Norm = layers.BatchNorm
    stem: str = "imagenet"
    initialization: str = "torchvision"
    dropout: float = 0.2
    stochastic_depth: float = 0.2

    @nn.compact
    def __call__(self, x, train: bool = False, mask: Optional[jax.Array] = None):
        kernel_init = layers.conv_kernel_init(self.initialization)
        cn = functools.partial(layers.conv_bn, norm=self.norm, dtype=self.dtype, kernel_init=kernel_init)
        conv = functools.partial(layers.conv, dtype=self.dtype, kernel_init=kernel_init)
        rng = self.make_rng("dropout") if train and self.stochastic_depth > 0 else None
        x = x.astype(self.dtype)
        stride = 2 if layers.imagenet_stem(self.stem) else 1
        x = cn(x, layers.scaled(32, self.width, 8), 3, train, mask, stride, act=nn.silu, name="features_0_0",
               norm_name="features_0_1")
        total = sum(stage[-1] for stage in EFFICIENTNET_B0_STAGES)
        index = 0
        for stage, (expansion, kernel, stride, out, blocks) in enumerate(EFFICIENTNET_B0_STAGES):
            for i in range(blocks):
                block_rng = None if rng is None else jax.random.fold_in(rng, index)
                x = _mbconv(x, f"features_{stage + 1}_{i}_block_", layers.scaled(out, self.width, 8), expansion,
                            kernel, stride if i == 0 else 1, self.stochastic_depth * index / total, train, mask,
                            block_rng, cn, conv)
                index += 1
        last = len(EFFICIENTNET_B0_STAGES) + 1
        x = cn(x, 4 * x.shape[-1], 1, train, mask, act=nn.silu, name=f"features_{last}_0",
               norm_name=f"features_{last}_1")
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        head_init = ({"kernel_init": linear_init(self.num_classes), "bias_init": nn.initializers.zeros}
                     if self.initialization == "torchvision" else {})
        return layers.classifier(x, self.num_classes, self.dtype, **head_init)
