"""Every model `--config.model=NAME` can train, with its size:

    python -m cifar_jax.zoo --list [--num-classes 100]

prints each model's parameter count, float32 size and forward GFLOPs per 32x32 image
(XLA's cost analysis of a compiled batch-1 eval forward pass). The registry itself is
cifar_jax.models.
"""
from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp

from cifar_jax.models import IMAGE_SHAPE, MODELS, build, param_count


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
    """The Markdown table of every model in MODELS: parameters, float32 MB, forward GFLOPs."""
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
