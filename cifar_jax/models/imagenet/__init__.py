"""torchvision's ImageNet architectures, ported with their ImageNet stems, for fine-tuning
from torchvision's pretrained weights (cifar_jax.pretrained, docs/transfer.md).

Registered in cifar_jax.models as `imagenet_<name>`. Their widths are those of the
pretrained weights, so `width` must be 1.0. Parameterised layers carry torchvision's
module names (common.py); the final Linear is the top-level "classifier" (HEAD_KEY), as in
the zoo's CIFAR models. `TORCHVISION_RENAMED[name]` lists the torchvision modules whose
Flax name is not their path with "." -> "_".
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp

from cifar_jax.errors import ConfigError
from cifar_jax.models.imagenet import efficientnet, mobilenet, resnet, vgg
from cifar_jax.models.imagenet.common import adaptive_avg_pool

HEAD_KEY = "classifier"  # the top-level parameter of the final Linear (optim.param_labels)

# torchvision architecture name -> module class (or partial) called as (x, train, mask).
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet.ImageNetResNet18,
    "resnet50": resnet.ImageNetResNet50,
    "resnet152": resnet.ImageNetResNet152,
    "vgg16": vgg.ImageNetVGG16,
    "vgg16_bn": vgg.ImageNetVGG16BN,
    "mobilenet_v2": mobilenet.ImageNetMobileNetV2,
    "efficientnet_b0": efficientnet.ImageNetEfficientNetB0,
}
TORCHVISION_RENAMED = {
    "resnet18": resnet.RENAMED, "resnet50": resnet.RENAMED, "resnet152": resnet.RENAMED,
    "vgg16": vgg.RENAMED, "vgg16_bn": vgg.RENAMED,
    "mobilenet_v2": mobilenet.RENAMED, "efficientnet_b0": efficientnet.RENAMED,
}


def builder(arch: str) -> Callable[..., nn.Module]:
    """The registry's builder of `imagenet_<arch>`: (num_classes, width, dtype, **attributes)."""

    def build(num_classes: int = 1000, width: float = 1.0, dtype=jnp.float32, **attributes) -> nn.Module:
        if width != 1.0:
            raise ConfigError(f"model imagenet_{arch} has the fixed widths of torchvision's pretrained weights; "
                              f"width={width:g} is not possible: set --config.width=1.0")
        return ARCHITECTURES[arch](num_classes=num_classes, width=width, dtype=dtype, **attributes)

    build.__name__ = f"imagenet_{arch}"
    return build


MODELS = {f"imagenet_{arch}": builder(arch) for arch in ARCHITECTURES}

__all__ = ["ARCHITECTURES", "HEAD_KEY", "MODELS", "TORCHVISION_RENAMED", "adaptive_avg_pool", "builder"]
