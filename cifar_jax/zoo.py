"""Every model `--config.model=NAME` can train, their sizes, and the parameter budget.

    python -m cifar_jax.zoo --list [--num-classes 100]

prints each model's parameter count, float32 size and forward GFLOPs per 32x32 image
(XLA's cost analysis of a compiled batch-1 eval forward pass).
"""
from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp

from cifar_jax.errors import ConfigError
from cifar_jax.mobile import EfficientNetB0, MobileNetV2
from cifar_jax.models import ResNet9
from cifar_jax.resnets import VGG16, ResNet18, ResNet50, ResNet152

# name -> constructor(num_classes=, width=, dtype=) of a module called as (x, train, mask).
MODELS = {
    "resnet9": ResNet9,
    "resnet18": ResNet18,
    "resnet50": ResNet50,
    "resnet152": ResNet152,
    "vgg16": VGG16,
    "mobilenet_v2": MobileNetV2,
    "efficientnet_b0": EfficientNetB0,
}
IMAGE_SHAPE = (32, 32, 3)


def build(name: str, num_classes: int = 100, width: float = 1.0, dtype="float32"):
    if name not in MODELS:
        raise ConfigError(f"model={name!r} is unknown; set --config.model to one of {', '.join(MODELS)}")
    return MODELS[name](num_classes=num_classes, width=width, dtype=jnp.dtype(dtype))


def param_count(model, image_shape=IMAGE_SHAPE) -> int:
    """Number of parameters, from shapes only (jax.eval_shape: nothing is computed)."""
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, *image_shape), jnp.float32), train=False)
    )
    return sum(x.size for x in jax.tree.leaves(shapes["params"]))


def check_param_budget(config) -> None:
    """Refuses a model whose float32 parameters exceed config.max_param_mb (0: no limit)."""
    name = config.get("model", "resnet9")
    model = build(name, config.num_classes, config.width, config.dtype)
    limit = config.get("max_param_mb", 0.0)
    if limit and limit > 0:
        size = param_count(model) * 4 / 1e6
        if size > limit:
            raise ConfigError(
                f"model {name} (width {config.width}, {config.num_classes} classes) has {size:.1f} MB of "
                f"float32 parameters, over max_param_mb={limit:g}; pick a smaller model or width, "
                "or raise --config.max_param_mb (0 disables the limit)"
            )


def forward_gflops(model, image_shape=IMAGE_SHAPE) -> float:
    """GFLOPs of one image's eval forward pass, from XLA's cost analysis of the compiled call."""
    x = jnp.zeros((1, *image_shape), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    compiled = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x).compile()
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
        cost = cost[0]
    return float(cost["flops"]) / 1e9


def table(num_classes: int = 100) -> str:
    lines = [
        f"| model | parameters ({num_classes} classes) | float32 MB | forward GFLOPs / image |",
        "|---|---|---|---|",
    ]
    for name in MODELS:
        model = build(name, num_classes)
        count = param_count(model)
        lines.append(f"| `{name}` | {count:,} | {count * 4 / 1e6:.1f} | {forward_gflops(model):.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifar_jax.zoo", description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print every model's size and GFLOPs")
    parser.add_argument("--num-classes", type=int, default=100)
    args = parser.parse_args(argv)
    if not args.list:
        print("models: " + ", ".join(MODELS) + "\n(run with --list for sizes and GFLOPs)")
        return 0
    print(table(args.num_classes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
