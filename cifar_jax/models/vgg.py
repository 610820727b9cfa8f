"""VGG16 in torchvision's layout (torchvision/models/vgg.py, configuration "D"), with or without
BatchNorm, with torchvision's ImageNet classifier or the CIFAR one.

13 conv3x3 (bias) [+ norm] + ReLU with five 2x2 max-pools (a 32x32 image ends as a 1x1 map),
then the classifier:
- `imagenet_classifier` True, torchvision's: AdaptiveAvgPool2d((7, 7)), Linear(25088, 4096)
  ReLU Dropout Linear(4096, 4096) ReLU Dropout Linear (imagenet_vgg16, imagenet_vgg16_bn);
- False, kuangliu/pytorch-cifar's models/vgg.py (vgg16, with BatchNorm): one Linear on the
  flattened map (512 features at 32x32).
Either flattens in PyTorch's (C, H, W) order, so a first Linear's weight is torchvision's,
transposed. `initialization`: "pytorch" (PyTorch's defaults, as kuangliu) or "torchvision"
(convs kaiming-normal fan-out with zero bias, Linears N(0, 0.01) with zero bias). VGG has no
stem to choose: its first conv is 3x3/1 in both. `width` scales the convs' channels.

Names: `features_N` as in torchvision's Sequential (the convs and norms of vgg16_bn's, so
VGG16_BN weights load into the CIFAR model's convs); its `classifier.0` / `.3` are "fc6" /
"fc7", and only the last Linear (`classifier.6`) is "classifier", the head. Dropout draws
from the 'dropout' RNG in training.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from cifar_jax.models import layers

VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
RENAMED = {"classifier.0": "fc6", "classifier.3": "fc7", "classifier.6": "classifier"}
LINEAR_INIT = nn.initializers.normal(0.01)  # torchvision's, for every Linear of its VGGs


class VGG16(nn.Module):
    batch_norm: bool = False
    imagenet_classifier: bool = True
    num_classes: int = 100
    width: float = 1.0
    dtype: Any = jnp.float32
    norm: layers.Norm = layers.BatchNorm
    initialization: str = "torchvision"
    dropout: float = 0.5

    @nn.compact
    def __call__(self, x, train: bool = False, mask: Optional[jax.Array] = None):
        kernel_init = layers.conv_kernel_init(self.initialization)
        linear_init = {} if kernel_init is None else {"kernel_init": LINEAR_INIT, "bias_init": nn.initializers.zeros}
        x = x.astype(self.dtype)
        index = 0  # the position in torchvision's `features` Sequential
        for layer in VGG16_LAYERS:
            if layer == "M":
                x = layers.max_pool(x)
                index += 1
                continue
            x = layers.conv(x, layers.scaled(layer, self.width), 3, bias=True, dtype=self.dtype,
                            kernel_init=kernel_init, name=f"features_{index}")
            if self.batch_norm:
                x = self.norm(name=f"features_{index + 1}")(x, train, mask)
            x = nn.relu(x)
            index += 3 if self.batch_norm else 2
        if self.imagenet_classifier:
            x = layers.adaptive_avg_pool(x, (7, 7))
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape((x.shape[0], -1))  # torch.flatten of NCHW
        if self.imagenet_classifier:
            for name in ("fc6", "fc7"):
                x = nn.relu(layers.linear(x, 4096, self.dtype, name=name, **linear_init))
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return layers.classifier(x, self.num_classes, self.dtype, **linear_init)
