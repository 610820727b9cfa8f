"""Every model `--config.model=NAME` can train: the registry, and the parameter budget.

    model = models.build("resnet18", num_classes=100, width=1.0, dtype="float32")
    variables = model.init(rng, images, train=False)
    logits, updates = model.apply(variables, images, train=True, mask=mask, mutable=["batch_stats"])

One module per architecture (resnet9, resnet, vgg, mobilenet, efficientnet, airbench), all
built from `layers`. The zoo's architectures carry torchvision's layer names; the registry makes each one
twice, as the CIFAR variant the zoo trains from scratch (`resnet50`: a CIFAR stem) and as
torchvision's ImageNet model (`imagenet_resnet50`), by the modules' attributes. Every model
takes `num_classes`, `width` (channel multiplier), `dtype` (compute dtype; parameters,
statistics and logits stay float32) and `norm` (layers.Norm), and is called as
`(x, train, mask)`. docs/models.md: how to add one, and the parameter-tree contract that
checkpoints and cifar_jax.convert rely on.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import flax.linen as nn

from cifar_jax.errors import ConfigError
from cifar_jax.models import efficientnet, mobilenet, resnet, vgg
from cifar_jax.models.airbench import AirBench94
from cifar_jax.models.layers import BatchNorm, torch_uniform
from cifar_jax.models.resnet9 import SEED_WIDTHS, ResNet9, seed_channels

# The top-level parameter key of every model's final classifier, the "head" that
# backbone_lr_mult and freeze_backbone (cifar_jax.optim) treat apart from the rest.
HEAD_KEY = "classifier"

IMAGENET = {"stem": "imagenet", "initialization": "torchvision"}  # torchvision's own models
KUANGLIU = {"stem": "cifar", "initialization": "pytorch"}  # kuangliu/pytorch-cifar's CIFAR variants

# torchvision architecture -> its ImageNet model here (same layers, names and init).
TORCHVISION: dict[str, Callable[..., nn.Module]] = {
    "resnet18": partial(resnet.ResNet18, **IMAGENET),
    "resnet50": partial(resnet.ResNet50, **IMAGENET),
    "resnet152": partial(resnet.ResNet152, **IMAGENET),
    "vgg16": partial(vgg.VGG16, batch_norm=False, initialization="torchvision"),
    "vgg16_bn": partial(vgg.VGG16, batch_norm=True, initialization="torchvision"),
    "mobilenet_v2": partial(mobilenet.MobileNetV2, **IMAGENET),
    "efficientnet_b0": partial(efficientnet.EfficientNetB0, **IMAGENET),
}
# The torchvision modules whose Flax name is not their path with "." -> "_".
TORCHVISION_RENAMED = {
    "resnet18": resnet.RENAMED, "resnet50": resnet.RENAMED, "resnet152": resnet.RENAMED,
    "vgg16": vgg.RENAMED, "vgg16_bn": vgg.RENAMED,
    "mobilenet_v2": mobilenet.RENAMED, "efficientnet_b0": efficientnet.RENAMED,
}
# The zoo's CIFAR variants: kuangliu/pytorch-cifar's models (PyTorch's init; VGG16 with
# BatchNorm and one Linear; MobileNetV2 with more changes, mobilenet.CIFAR_CHANGES), and
# torchvision's EfficientNet-B0 with a stride-1 stem. Each has the layers of the torchvision
# architecture CIFAR_OF names, whose weights load into its layers of the same name and shape
# (cifar_jax.pretrained).
CIFAR_MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": partial(resnet.ResNet18, **KUANGLIU),
    "resnet50": partial(resnet.ResNet50, **KUANGLIU),
    "resnet152": partial(resnet.ResNet152, **KUANGLIU),
    "vgg16": partial(vgg.VGG16, batch_norm=True, imagenet_classifier=False, initialization="pytorch"),
    "mobilenet_v2": partial(mobilenet.MobileNetV2, **KUANGLIU, **mobilenet.CIFAR_CHANGES),
    "efficientnet_b0": partial(efficientnet.EfficientNetB0, stem="cifar", initialization="torchvision"),
}
CIFAR_OF = {"resnet18": "resnet18", "resnet50": "resnet50", "resnet152": "resnet152", "vgg16": "vgg16_bn",
            "mobilenet_v2": "mobilenet_v2", "efficientnet_b0": "efficientnet_b0"}
IMAGENET_PREFIX = "imagenet_"


def _imagenet(arch: str) -> Callable[..., nn.Module]:
    """The registry's builder of `imagenet_<arch>`: (num_classes, width, dtype, **attributes)."""

    def build(num_classes: int = 1000, width: float = 1.0, dtype=jnp.float32, **attributes) -> nn.Module:
        if width != 1.0:
            raise ConfigError(f"model imagenet_{arch} has the fixed widths of torchvision's pretrained weights; "
                              f"width={width:g} is not possible: set --config.width=1.0")
        return TORCHVISION[arch](num_classes=num_classes, width=width, dtype=dtype, **attributes)

    build.__name__ = f"imagenet_{arch}"
    return build


IMAGENET_MODELS = {IMAGENET_PREFIX + arch: _imagenet(arch) for arch in TORCHVISION}
# name -> builder(num_classes=, width=, dtype=, **attributes) of a module called as (x, train, mask).
MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet9": ResNet9,
    **CIFAR_MODELS,
    "airbench94": AirBench94,  # configs/fast.py's network (cifar_jax/models/airbench.py, docs/fast.md)
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
    "CIFAR_MODELS",
    "CIFAR_OF",
    "HEAD_KEY",
    "IMAGE_SHAPE",
    "IMAGENET_MODELS",
    "IMAGENET_PREFIX",
    "MODELS",
    "SEED_WIDTHS",
    "TORCHVISION",
    "TORCHVISION_RENAMED",
    "BatchNorm",
    "ResNet9",
    "build",
    "check_param_budget",
    "param_count",
    "parameter_summary",
    "seed_channels",
    "torch_uniform",
]
