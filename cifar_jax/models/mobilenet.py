"""MobileNetV2 in torchvision's layout (torchvision/models/mobilenetv2.py), as torchvision's
ImageNet model or as kuangliu/pytorch-cifar's CIFAR one (models/mobilenetv2.py).

A 3x3 stem conv to 32, 17 inverted residuals (1x1 expand, 3x3 depthwise, 1x1 project; a
residual where a block keeps stride 1 and width), a 1x1 conv to 1280, global average
pooling, Dropout, Linear. `stem` "imagenet" is a stride-2 stem conv, "cifar" a stride-1 one.
kuangliu's CIFAR model differs from torchvision's in more than the stem and the init; each
difference is an attribute (CIFAR_CHANGES below holds its values):
- `activation`: ReLU, not ReLU6;
- `stage_strides`: the second stage at stride 1 too (32x32 inputs reach a 4x4 map);
- `conv_shortcuts`: a 1x1 conv + norm shortcut (`features_N_shortcut_0`, `_1`) where a
  stride-1 block changes the width (torchvision has no residual there);
- `always_expand`: the 1x1 expand conv (`features_1_expand_0`, `_1`) even at expansion 1
  (torchvision leaves it out);
- `dropout` 0 (no Dropout).
Those layers exist only in the CIFAR model, so they carry names of their own; every other
layer is named after torchvision's `features` Sequential (`features_2_conv_1_0` is block 2's
depthwise conv) and `classifier.1` is "classifier". `initialization`: "pytorch" (PyTorch's
defaults, as kuangliu) or "torchvision" (convs kaiming-normal fan-out, the Linear N(0, 0.01)
with zero bias). `width` scales the channels (multiples of 8, as torchvision's
`_make_divisible`).
Dropout draws from the 'dropout' RNG in training.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cifar_jax.models import layers

# (expansion, out channels, blocks) of each stage: torchvision's setting.
STAGES = ((1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1))
TORCHVISION_STRIDES = (1, 2, 2, 2, 1, 2, 1)  # of each stage's first block
RENAMED = {"classifier.1": "classifier"}
LINEAR_INIT = nn.initializers.normal(0.01)  # torchvision's
# kuangliu's CIFAR MobileNetV2, besides its stride-1 stem and PyTorch's init (see above).
CIFAR_CHANGES = {"activation": nn.relu, "stage_strides": (1, 1, 2, 2, 1, 2, 1), "conv_shortcuts": True,
            "always_expand": True, "dropout": 0.0}


def _inverted_residual(x, prefix: str, out: int, expansion: int, stride: int, train: bool, mask, cn: Callable,
                       act: Callable, conv_shortcuts: bool, always_expand: bool):
    """One block named `prefix` ("features_3_"); `cn`: layers.conv_bn with the model's settings."""
    hidden = int(round(x.shape[-1] * expansion))
    y, i = x, 0  # i: the position in torchvision's `conv` Sequential of the block
    if expansion != 1:
        y = cn(y, hidden, 1, train, mask, act=act, name=f"{prefix}conv_0_0", norm_name=f"{prefix}conv_0_1")
        i = 1
    elif always_expand:
        y = cn(y, hidden, 1, train, mask, act=act, name=f"{prefix}expand_0", norm_name=f"{prefix}expand_1")
    y = cn(y, hidden, 3, train, mask, stride, groups=hidden, act=act, name=f"{prefix}conv_{i}_0",
           norm_name=f"{prefix}conv_{i}_1")
    y = cn(y, out, 1, train, mask, name=f"{prefix}conv_{i + 1}", norm_name=f"{prefix}conv_{i + 2}")
    if stride != 1:
        return y
    if x.shape[-1] != out:
        if not conv_shortcuts:
            return y
        x = cn(x, out, 1, train, mask, name=f"{prefix}shortcut_0", norm_name=f"{prefix}shortcut_1")
    return x + y


class MobileNetV2(nn.Module):
    num_classes: int = 100
    width: float = 1.0
    dtype: Any = jnp.float32
    norm: layers.Norm = layers.BatchNorm
    stem: str = "imagenet"
    initialization: str = "torchvision"
    activation: Callable = nn.relu6
    stage_strides: Sequence[int] = TORCHVISION_STRIDES
    conv_shortcuts: bool = False
    always_expand: bool = False
    dropout: float = 0.2

    @nn.compact
    def __call__(self, x, train: bool = False, mask: Optional[jax.Array] = None):
        cn = functools.partial(layers.conv_bn, norm=self.norm, dtype=self.dtype,
                               kernel_init=layers.conv_kernel_init(self.initialization))
        act = self.activation
        x = x.astype(self.dtype)
        stride = 2 if layers.imagenet_stem(self.stem) else 1
        x = cn(x, layers.scaled(32, self.width, 8), 3, train, mask, stride, act=act, name="features_0_0",
               norm_name="features_0_1")
        index = 1
        for (expansion, out, blocks), stride in zip(STAGES, self.stage_strides):
            for i in range(blocks):
                x = _inverted_residual(x, f"features_{index}_", layers.scaled(out, self.width, 8), expansion,
                                       stride if i == 0 else 1, train, mask, cn, act, self.conv_shortcuts,
                                       self.always_expand)
                index += 1
        x = cn(x, layers.scaled(1280, self.width, 8), 1, train, mask, act=act, name=f"features_{index}_0",
               norm_name=f"features_{index}_1")
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        torchvision = self.initialization == "torchvision"
        head_init = {"kernel_init": LINEAR_INIT, "bias_init": nn.initializers.zeros} if torchvision else {}
        return layers.classifier(x, self.num_classes, self.dtype, **head_init)
