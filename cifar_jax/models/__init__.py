"""Every model `--config.model=NAME` can train: the registry, and the parameter budget.

    model = models.build("resnet18", num_classes=100, width=1.0, dtype="float32")
    variables = model.init(rng, images, train=False)
    logits, updates = model.apply(variables, images, train=True, mask=mask, mutable=["batch_stats"])

One module per family (resnet9, resnet, vgg, mobilenet, efficientnet; imagenet/ holds
torchvision's ImageNet architectures), all built from `layers`. Every model takes
`num_classes`, `width` (channel multiplier), `dtype` (compute dtype; parameters, statistics
and logits stay float32) and `norm` (layers.Norm), and is called as `(x, train, mask)`.
docs/models.md: how to add one, and the parameter-tree contract that checkpoints and
cifar_jax.convert rely on.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import flax.linen as nn

from cifar_jax.errors import ConfigError
from cifar_jax.models.airbench import AirBench94
from cifar_jax.models.efficientnet import EfficientNetB0
# HEAD_KEY: the top-level parameter key of every model's final classifier, the "head"
# that backbone_lr_mult and freeze_backbone (cifar_jax.optim) treat apart from the rest.
from cifar_jax.models.imagenet import HEAD_KEY
from cifar_jax.models.imagenet import MODELS as IMAGENET_MODELS
from cifar_jax.models.layers import BatchNorm, torch_uniform
from cifar_jax.models.mobilenet import MobileNetV2
from cifar_jax.models.resnet import ResNet18, ResNet50, ResNet152
from cifar_jax.models.resnet9 import SEED_WIDTHS, ResNet9, seed_channels
from cifar_jax.models.vgg import VGG16

# name -> builder(num_classes=, width=, dtype=, **attributes) of a module called as (x, train, mask).
MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet9": ResNet9,
    "resnet18": ResNet18,
    "resnet50": ResNet50,
    "resnet152": ResNet152,
    "vgg16": VGG16,
    "mobilenet_v2": MobileNetV2,
    "efficientnet_b0": EfficientNetB0,
    "airbench94": AirBench94,  # configs/fast.py's network (cifar_jax/models/airbench.py)
    # torchvision's ImageNet architectures (width 1.0 only), for pretrained weights:
    # imagenet_resnet18, _resnet50, _resnet152, _vgg16, _vgg16_bn, _mobilenet_v2, _efficientnet_b0.
    **IMAGENET_MODELS,
}
IMAGE_SHAPE = (32, 32, 3)


def build(name: str, num_classes: int = 100, width: float = 1.0, dtype="float32", **attributes) -> nn.Module:
    """The registered model `name`; `attributes` (e.g. `norm=...`) go to its constructor."""
    if name not in MODELS:
        raise ConfigError(f"model={name!r} is unknown; set --config.model to one of {', '.join(MODELS)}")
    return MODELS[name](num_classes=num_classes, width=width, dtype=jnp.dtype(dtype), **attributes)


def param_count(model: nn.Module, image_shape=IMAGE_SHAPE) -> int:
    """Number of parameters, from shapes only (jax.eval_shape: nothing is computed)."""
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, *image_shape), jnp.float32), train=False)
    )
    return sum(x.size for x in jax.tree.leaves(shapes["params"]))


def parameter_summary(params) -> tuple[int, int]:
    """Size of a parameter tree.

    Args:
      params: a tree of arrays (or shapes).

    Returns:
      (number of parameters, bytes they occupy in their dtypes).
    """
    leaves = jax.tree.leaves(params)
    return sum(x.size for x in leaves), sum(x.size * x.dtype.itemsize for x in leaves)


def check_param_budget(config) -> None:
    """Refuses a model whose float32 parameters exceed config.max_param_mb (0: no limit)."""
    model = build(config.model, config.num_classes, config.width, config.dtype)
    limit = config.max_param_mb
    if limit and limit > 0:
        size = param_count(model) * 4 / 1e6
        if size > limit:
            raise ConfigError(
                f"model {config.model} (width {config.width}, {config.num_classes} classes) has {size:.1f} MB of "
                f"float32 parameters, over max_param_mb={limit:g}; pick a smaller model or width, "
                "or raise --config.max_param_mb (0 disables the limit)"
            )


__all__ = [
    "HEAD_KEY",
    "IMAGE_SHAPE",
    "IMAGENET_MODELS",
    "MODELS",
    "SEED_WIDTHS",
    "BatchNorm",
    "EfficientNetB0",
    "HEAD_KEY",
    "MobileNetV2",
    "ResNet9",
    "ResNet18",
    "ResNet50",
    "ResNet152",
    "VGG16",
    "build",
    "check_param_budget",
    "param_count",
    "parameter_summary",
    "seed_channels",
    "torch_uniform",
]
