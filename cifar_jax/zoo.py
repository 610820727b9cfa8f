"""Every model `--config.model=NAME` can train, with its size:

    cifar-jax models --list [--num-classes 100] [--image-size 32]     (or python -m cifar_jax.zoo)
    cifar-jax models --list --memory --image-size 224 --batch-size 64 [--grad-accum-steps 2]

prints each model's parameter count, float32 size and forward GFLOPs per image of the given
size (XLA's cost analysis of a compiled batch-1 eval forward pass); with --memory, the
estimated device memory of a train step at that batch and size (cifar_jax.memory, from
shapes only; the rest of the run config comes from --config, by default the named config default).
A model whose head needs 32x32 inputs (the CIFAR VGG16's flatten) shows "-" at other sizes.
The registry itself is cifar_jax.models.
"""
from __future__ import annotations

import sys

import flax.errors
import jax
import jax.numpy as jnp

from cifar_jax.cli_common import ArgumentParser
from cifar_jax.errors import CifarJaxError
from cifar_jax.invocation import command
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


def table(num_classes: int = 100, image_size: int = 32, memory: bool = False, batch_size: int = 256,
          grad_accum_steps: int = 1, config_file=None) -> str:
    """The Markdown table of every model in MODELS: parameters, float32 MB, forward GFLOPs at
    image_size; with `memory`, `cifar_jax.memory.estimate_train_bytes` of a train step with
    `batch_size` images of that size in `grad_accum_steps` microbatches (the other settings
    from `config_file`, a file or a named config; default: the named config default)."""
    size = "" if image_size == 32 else f"{image_size}x{image_size} "
    header = f"| model | parameters ({num_classes} classes) | float32 MB | forward GFLOPs / {size}image |"
    lines = [header, "|---|---|---|---|"]
    if memory:
        from cifar_jax.config import load_config_file

        base = load_config_file(config_file or "default")
        micro = f"{batch_size}" + (f" as {grad_accum_steps} x {batch_size // grad_accum_steps}" if grad_accum_steps > 1 else "")
        lines = [header + f" train step GiB (batch {micro}) | of it activations GiB |", "|---|---|---|---|---|---|"]
    for name in MODELS:
        model = build(name, num_classes)
        count = param_count(model)
        try:
            cells = [f"{forward_gflops(model, (image_size, image_size, 3)):.3f}"]
            if memory:
                estimate = _memory(base, name, num_classes, image_size, batch_size, grad_accum_steps)
                cells += [f"{estimate['total'] / 2**30:.2f}", f"{estimate['activations'] / 2**30:.2f}"]
        except flax.errors.ScopeParamShapeError:  # a head built for 32x32 inputs only
            if image_size == 32:
                raise
            cells = ["-"] * (3 if memory else 1)
        lines.append(f"| `{name}` | {count:,} | {count * 4 / 1e6:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _memory(base, name: str, num_classes: int, image_size: int, batch_size: int, grad_accum_steps: int) -> dict:
    from cifar_jax.memory import estimate_train_bytes

    config = base.copy_and_resolve_references()
    config.model, config.num_classes = name, num_classes
    return estimate_train_bytes(config, batch_size=batch_size, image_size=image_size,
                                grad_accum_steps=grad_accum_steps)


def main(argv=None) -> int:
    parser = ArgumentParser(prog=command("models"), description=(
        "List the models --config.model can train; with --list, each one's parameter count, float32 "
        "size and forward GFLOPs per image of --image-size; with --memory, also the estimated device "
        "memory of a train step at --batch-size."))
    parser.add_argument("--list", action="store_true", help="print every model's size and GFLOPs")
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=32, help="input size (the resize of config.image_size)")
    parser.add_argument("--memory", action="store_true", help="add the estimated train-step memory")
    parser.add_argument("--batch-size", type=int, default=256, help="with --memory: images per step")
    parser.add_argument("--grad-accum-steps", type=int, default=1, help="with --memory: microbatches per step")
    parser.add_argument("--config", help="with --memory: the run config (a named config or a file) for the "
                                         "other settings (default: default)")
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
        for flag in ("num_classes", "image_size", "batch_size", "grad_accum_steps"):
            if getattr(args, flag) < 1:
                parser.error(f"--{flag.replace('_', '-')} must be a positive integer")
        if args.batch_size % args.grad_accum_steps:
            parser.error("--batch-size must be a multiple of --grad-accum-steps")
        if not args.list:
            print("models: " + ", ".join(MODELS) + f"\n({command('models')} --list: their sizes and GFLOPs)")
            return 0
        print(table(args.num_classes, args.image_size, args.memory, args.batch_size, args.grad_accum_steps,
                    args.config))
    except CifarJaxError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
