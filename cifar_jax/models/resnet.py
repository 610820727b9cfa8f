"""ResNet18/50/152 in torchvision's layout (torchvision/models/resnet.py, "V1.5": a bottleneck's
stride on its 3x3 conv), with a CIFAR or an ImageNet stem.

Four stages (64, 128, 256, 512 planes; strides 1, 2, 2, 2) of basic blocks (two 3x3) or
bottlenecks (1x1, 3x3, 1x1 x4), each with a strided 1x1 conv + norm shortcut where it changes
shape, then global average pooling and a Linear. The stem:
- "imagenet": torchvision's 7x7/2 conv, norm, ReLU, 3x3/2 max-pool (imagenet_resnet*);
- "cifar": a 3x3/1 conv, norm, ReLU and no pool, so a 32x32 image reaches the last stage as
  a 4x4 map: kuangliu/pytorch-cifar's models/resnet.py (resnet18, ...), which is torchvision's
  ResNet in every other layer.
`initialization`: "pytorch" (PyTorch's defaults, as kuangliu) or "torchvision" (convs
kaiming-normal fan-out; the Linear PyTorch's default). `width` scales every channel count.

Layers carry torchvision's names, so its weights load into either stem (cifar_jax.pretrained):
`conv1`, `bn1`, `layer1_0_conv1`, `layer2_0_downsample_0` (the shortcut's conv), ...; `fc` is
"classifier".
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cifar_jax.models import layers

# torchvision module -> Flax name, where it is not the module path with "." -> "_".
RENAMED = {"fc": "classifier"}


def _block(x, prefix: str, planes: int, stride: int, bottleneck: bool, train: bool, mask, cn: Callable):
    """BasicBlock or Bottleneck named `prefix` ("layer2_0_"), plus its shortcut; `cn`:
    layers.conv_bn with the model's settings."""
    out = planes * 4 if bottleneck else planes
    if bottleneck:
        y = cn(x, planes, 1, train, mask, act=nn.relu, name=prefix + "conv1", norm_name=prefix + "bn1")
        y = cn(y, planes, 3, train, mask, stride, act=nn.relu, name=prefix + "conv2", norm_name=prefix + "bn2")
        y = cn(y, out, 1, train, mask, name=prefix + "conv3", norm_name=prefix + "bn3")
    else:
        y = cn(x, planes, 3, train, mask, stride, act=nn.relu, name=prefix + "conv1", norm_name=prefix + "bn1")
        y = cn(y, planes, 3, train, mask, name=prefix + "conv2", norm_name=prefix + "bn2")
    if stride != 1 or x.shape[-1] != out:
        x = cn(x, out, 1, train, mask, stride, name=prefix + "downsample_0", norm_name=prefix + "downsample_1")
    return nn.relu(x + y)


class ResNet(nn.Module):
    stage_sizes: Sequence[int]
    bottleneck: bool = False
    num_classes: int = 100
    width: float = 1.0
    dtype: Any = jnp.float32
    norm: layers.Norm = layers.BatchNorm
    stem: str = "imagenet"
    initialization: str = "torchvision"

    @nn.compact
    def __call__(self, x, train: bool = False, mask: Optional[jax.Array] = None):
        cn = functools.partial(layers.conv_bn, norm=self.norm, dtype=self.dtype,
                               kernel_init=layers.conv_kernel_init(self.initialization))
        x = x.astype(self.dtype)
        stem = layers.scaled(64, self.width)
        if layers.imagenet_stem(self.stem):
            x = cn(x, stem, 7, train, mask, 2, act=nn.relu, name="conv1", norm_name="bn1")
            x = layers.stem_max_pool(x)
        else:
            x = cn(x, stem, 3, train, mask, act=nn.relu, name="conv1", norm_name="bn1")
        for stage, (blocks, planes) in enumerate(zip(self.stage_sizes, (64, 128, 256, 512))):
            for i in range(blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                x = _block(x, f"layer{stage + 1}_{i}_", layers.scaled(planes, self.width), stride, self.bottleneck,
                           train, mask, cn)
        x = jnp.mean(x, axis=(1, 2))  # AdaptiveAvgPool2d((1, 1)) + flatten
        return layers.classifier(x, self.num_classes, self.dtype)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), bottleneck=False)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), bottleneck=True)
ResNet152 = functools.partial(ResNet, stage_sizes=(3, 8, 36, 3), bottleneck=True)
