"""torchvision's ImageNet ResNet18/50/152 (torchvision/models/resnet.py, "V1.5": the stride
of a bottleneck on its 3x3 conv).

7x7/2 stem conv, BatchNorm, ReLU, 3x3/2 max-pool, four stages (64, 128, 256, 512 planes;
strides 1, 2, 2, 2), global average pooling, Linear. Init as torchvision: convs
kaiming_normal fan_out, norms ones/zeros, the Linear PyTorch's default (torch_uniform).
Layers carry torchvision's names (`layer1_0_conv1`, `layer2_0_downsample_0`, ...; see
common.py); `fc` is called "classifier".
"""
from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cifar_jax.models import layers
from cifar_jax.models.imagenet.common import conv_norm, stem_max_pool

# torchvision module -> Flax name, where it is not the module path with "." -> "_".
RENAMED = {"fc": "classifier"}


def _block(x, prefix: str, planes: int, stride: int, bottleneck: bool, train: bool, mask, cn):
    """BasicBlock (two 3x3) or Bottleneck (1x1, 3x3 strided, 1x1 x4), plus the shortcut."""
    out = planes * 4 if bottleneck else planes
    if bottleneck:
        y = cn(x, planes, 1, train, mask, conv_name=prefix + "conv1", norm_name=prefix + "bn1", act=nn.relu)
        y = cn(y, planes, 3, train, mask, conv_name=prefix + "conv2", norm_name=prefix + "bn2", stride=stride,
               act=nn.relu)
        y = cn(y, out, 1, train, mask, conv_name=prefix + "conv3", norm_name=prefix + "bn3")
    else:
        y = cn(x, planes, 3, train, mask, conv_name=prefix + "conv1", norm_name=prefix + "bn1", stride=stride,
               act=nn.relu)
        y = cn(y, planes, 3, train, mask, conv_name=prefix + "conv2", norm_name=prefix + "bn2")
    if stride != 1 or x.shape[-1] != out:
        x = cn(x, out, 1, train, mask, conv_name=prefix + "downsample_0", norm_name=prefix + "downsample_1",
               stride=stride)
    return nn.relu(x + y)


class ImageNetResNet(nn.Module):
    stage_sizes: Sequence[int]
    bottleneck: bool = False
    num_classes: int = 1000
    width: float = 1.0  # fixed by the pretrained weights: models.build refuses anything else
    dtype: Any = jnp.float32
    norm: layers.Norm = layers.BatchNorm

    @nn.compact
    def __call__(self, x, train: bool = False, mask: Optional[jax.Array] = None):
        cn = functools.partial(conv_norm, norm=self.norm, dtype=self.dtype)
        x = x.astype(self.dtype)
        x = cn(x, 64, 7, train, mask, conv_name="conv1", norm_name="bn1", stride=2, act=nn.relu)
        x = stem_max_pool(x)
        for stage, (blocks, planes) in enumerate(zip(self.stage_sizes, (64, 128, 256, 512))):
            for i in range(blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                x = _block(x, f"layer{stage + 1}_{i}_", planes, stride, self.bottleneck, train, mask, cn)
        x = jnp.mean(x, axis=(1, 2))  # AdaptiveAvgPool2d((1, 1)) + flatten
        return layers.classifier(x, self.num_classes, self.dtype)


ImageNetResNet18 = functools.partial(ImageNetResNet, stage_sizes=(2, 2, 2, 2), bottleneck=False)
ImageNetResNet50 = functools.partial(ImageNetResNet, stage_sizes=(3, 4, 6, 3), bottleneck=True)
ImageNetResNet152 = functools.partial(ImageNetResNet, stage_sizes=(3, 8, 36, 3), bottleneck=True)
