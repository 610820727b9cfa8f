"""torchvision's ImageNet VGG16 and VGG16-BN (torchvision/models/vgg.py, configuration "D").

13 conv3x3 (bias) [+ BatchNorm] + ReLU with five 2x2 max-pools, AdaptiveAvgPool2d((7, 7)),
then Linear(25088, 4096) ReLU Dropout(0.5) Linear(4096, 4096) ReLU Dropout(0.5) Linear.
The pooled map is flattened in PyTorch's (C, H, W) order, so the first Linear's weight is
torchvision's, transposed. Init as torchvision: convs kaiming_normal fan_out with zero
bias, norms ones/zeros, Linears N(0, 0.01) with zero bias. Names: `features_N` as in
torchvision's Sequential; its `classifier.0` / `.3` are "fc6" / "fc7", and only the last
Linear (`classifier.6`) is "classifier", the head. Dropout draws from the 'dropout' RNG.
"""
from __future__ import annotations

import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from cifar_jax.models import layers
from cifar_jax.models.imagenet.common import FAN_OUT, adaptive_avg_pool

VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
RENAMED = {"classifier.0": "fc6", "classifier.3": "fc7", "classifier.6": "classifier"}
LINEAR_INIT = nn.initializers.normal(0.01)


class ImageNetVGG16(nn.Module):
    batch_norm: bool = False
    num_classes: int = 1000
    width: float = 1.0  # fixed by the pretrained weights: models.build refuses anything else
    dtype: Any = jnp.float32
    norm: layers.Norm = layers.BatchNorm
    dropout: float = 0.5

    @nn.compact
    def __call__(self, x, train: bool = False, mask: Optional[jax.Array] = None):
        x = x.astype(self.dtype)
        index = 0  # the position in torchvision's `features` Sequential
        for layer in VGG16_LAYERS:
            if layer == "M":
                x = layers.max_pool(x)
                index += 1
                continue
            x = layers.conv(x, layer, 3, bias=True, dtype=self.dtype, kernel_init=FAN_OUT, name=f"features_{index}")
            if self.batch_norm:
                x = self.norm(name=f"features_{index + 1}")(x, train, mask)
            x = nn.relu(x)
            index += 3 if self.batch_norm else 2
        x = adaptive_avg_pool(x, (7, 7))
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape((x.shape[0], -1))  # torch.flatten of NCHW
        dense = functools.partial(nn.Dense, dtype=self.dtype, kernel_init=LINEAR_INIT, bias_init=nn.initializers.zeros)
        for name in ("fc6", "fc7"):
            x = nn.relu(dense(4096, name=name)(x))
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return layers.classifier(x, self.num_classes, self.dtype, kernel_init=LINEAR_INIT,
                                 bias_init=nn.initializers.zeros)


ImageNetVGG16BN = functools.partial(ImageNetVGG16, batch_norm=True)
