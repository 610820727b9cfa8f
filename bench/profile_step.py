"""Where a train step's time goes: the step timed with one piece changed at a time, and
the device's own per-kernel times from a profiler trace.

    python bench/profile_step.py                    # seed model, batch 256, every variant
    python bench/profile_step.py --width 0.125 --batch-size 32 --steps 4 --variants base,sgd  # CPU smoke

Each variant runs `--steps` train steps in one compiled call (cifar_jax.multistep's scan, the
data resident on the device, as `python -m cifar_jax.train` runs them) and reports the
median over `--repeats` calls in ms per step, with the first call's seconds (compiling)
apart. Variants (all float32 unless named):

    base         the library's train step as the loop runs it
    bf16         config.dtype=bfloat16
    highest      float32 convolutions at Precision.HIGHEST (no TF32)
    tf32         jax.default_matmul_precision("tensorfloat32")
    no_augment   config.augment=False (no crop/flip)
    no_mask      batches without a mask (the BatchNorm statistics skip the masked sums)
    sgd          optax.sgd instead of the seed's clip/L2/Adam/one-cycle chain
    flat_adam    the seed's chain wrapped in optax.flatten (one buffer for all parameters)
    flax_bn      flax.linen.BatchNorm as the model's norm instead of cifar_jax.models.BatchNorm (no mask)
    batch2x      twice the batch (ms per step then covers twice the images)
    eval         the eval step alone (forward pass, inference BatchNorm)

--trace DIR also records one call of `base` and `bf16` with jax.profiler and prints the
device's 25 most expensive kernels (by total time) of each. Synthetic random images.

--json NAME writes bench/results/NAME-DATE-DEVICE.json (bench/results.py): `rows` of
`variant`, `batch`, `ms_per_step`, `images_per_s`, `first_call_s`, `finite`, and for the
traced variants `kernels` (name, ms per step, launches per step), plus the settings.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import math
import os
import pathlib
import statistics
import sys
import time
from collections import defaultdict

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench import results as bench_results  # noqa: E402
from cifar_jax import models  # noqa: E402
from cifar_jax.config import load_config_file  # noqa: E402
from cifar_jax.steps import create_train_state, eval_step, train_step  # noqa: E402

VARIANTS = ("base", "bf16", "highest", "tf32", "no_augment", "no_mask", "sgd", "flat_adam", "flax_bn",
            "batch2x", "eval")


class FlaxBatchNorm(nn.BatchNorm):
    """flax.linen.BatchNorm called as cifar_jax's norms are, `(x, train, mask)`, with torch's
    momentum 0.1 and eps 1e-5; for timing only (it ignores the mask)."""

    momentum: float = 0.9
    epsilon: float = 1e-5

    def __call__(self, x, train: bool, mask=None):
        return super().__call__(x, use_running_average=not train)


def _config(args, variant):
    config = load_config_file(str(REPO / "configs" / "default.py"))
    config.width, config.num_classes = args.width, args.num_classes
    config.batch_size = args.batch_size * (2 if variant == "batch2x" else 1)
    config.dtype = "bfloat16" if variant == "bf16" else "float32"
    config.augment = variant != "no_augment"
    return config


def _state(config, variant, steps_per_epoch):
    state = create_train_state(jax.random.key(0), config, steps_per_epoch)
    if variant == "flax_bn":  # the same model with flax's BatchNorm passed in as its norm
        model = models.build(config.model, config.num_classes, config.width, config.dtype, norm=FlaxBatchNorm)
        variables = jax.jit(lambda rng: model.init(rng, jnp.zeros((1, 32, 32, 3)), train=False))(jax.random.key(0))
        state = state.replace(apply_fn=model.apply, params=variables["params"], batch_stats=variables["batch_stats"],
                              opt_state=state.tx.init(variables["params"]))
    if variant == "sgd":
        tx = optax.inject_hyperparams(optax.sgd)(learning_rate=1e-3)
        state = state.replace(tx=tx, opt_state=tx.init(state.params))
    if variant == "flat_adam":  # the injected hyperparams stay readable: flatten keeps the inner state
        tx = optax.flatten(state.tx)
        state = state.replace(tx=tx, opt_state=tx.init(state.params))
    return jax.device_put(state)


def _precision(variant):
    if variant == "highest":
        return jax.default_matmul_precision("highest")
    if variant == "tf32":
        return jax.default_matmul_precision("tensorfloat32")
    return contextlib.nullcontext()


def _compiled_call(variant):
    """(state, images, labels, order, mask, rng) -> (state, losses): a scan of train steps,
    or of eval steps for `eval`, jitted with the state donated."""

    def run(state, images, labels, order, mask, rng):
        def body(state, xs):
            indices, batch_mask = xs
            batch = {"image": images[indices], "label": labels[indices]}
            if variant not in ("no_mask", "flax_bn"):
                batch["mask"] = batch_mask
            if variant == "eval":
                return state, eval_step(state, batch)["loss"]
            state, metrics = train_step(state, batch, rng)
            return state, metrics["loss"]

        return jax.lax.scan(body, state, (order, mask))

    return jax.jit(run, donate_argnums=0)


def measure(args, variant, images, labels, trace_dir=None):
    config = _config(args, variant)
    n = len(labels)
    batch = config.batch_size
    steps = args.steps
    order = jax.random.randint(jax.random.key(3), (args.repeats + 1, steps, batch), 0, n)
    mask = jnp.ones((steps, batch), bool)
    state = _state(config, variant, math.ceil(n / batch))
    call = _compiled_call(variant)
    rng = jax.random.key(1)
    times = []
    with _precision(variant):
        for i in range(args.repeats + 1):
            start = time.perf_counter()
            state, losses = call(state, images, labels, order[i], mask, rng)
            jax.block_until_ready((state, losses))
            times.append(time.perf_counter() - start)
        if trace_dir:
            jax.profiler.start_trace(trace_dir)
            state, losses = call(state, images, labels, order[0], mask, rng)
            jax.block_until_ready((state, losses))
            jax.profiler.stop_trace()
    ms = statistics.median(times[1:]) / steps * 1e3
    return {"variant": variant, "batch": batch, "ms_per_step": ms, "images_per_s": batch / ms * 1e3,
            "first_call_s": times[0], "finite": bool(np.isfinite(np.asarray(losses)).all())}


def device_kernels(trace_dir: str, top: int) -> list[tuple[str, float, int]]:
    """(kernel name, total ms, count) of the device planes of the newest trace in trace_dir."""
    files = sorted(glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True), key=lambda f: pathlib.Path(f).stat().st_mtime)
    if not files:
        return []
    data = jax.profiler.ProfileData.from_file(files[-1])
    totals, counts = defaultdict(float), defaultdict(int)
    for plane in data.planes:
        if not plane.name.startswith("/device:"):
            continue
        for line in plane.lines:
            if "stream" not in line.name.lower():  # the kernels as they ran, not the op lines
                continue
            for event in line.events:
                totals[event.name] += event.duration_ns / 1e6
                counts[event.name] += 1
    ranked = sorted(totals, key=totals.get, reverse=True)
    return [(name, totals[name], counts[name]) for name in ranked[:top]]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--train-size", type=int, default=50_000)
    parser.add_argument("--steps", type=int, default=48, help="train steps per timed call")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per variant (after one that compiles)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--trace", default="", help="folder for jax.profiler traces of base and bf16")
    parser.add_argument("--top", type=int, default=25)
    bench_results.add_arguments(parser)
    args = parser.parse_args(argv)
    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}; width {args.width}, "
          f"batch {args.batch_size}, {args.steps} steps per call, median of {args.repeats} calls", flush=True)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (args.train_size, 32, 32, 3), dtype=np.uint8))
    labels = jnp.asarray(rng.integers(0, args.num_classes, args.train_size).astype(np.int32))
    rows = []
    print(f"{'variant':<11} {'batch':>5} {'ms/step':>8} {'images/s':>10} {'vs base':>8} {'first call s':>13}")
    for variant in args.variants.split(","):
        if variant not in VARIANTS:
            parser.error(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
        trace = f"{args.trace}/{variant}" if args.trace and variant in ("base", "bf16") else None
        row = measure(args, variant, images, labels, trace)
        rows.append(row)
        base = rows[0]["images_per_s"]
        print(f"{variant:<11} {row['batch']:>5} {row['ms_per_step']:>8.3f} {row['images_per_s']:>10,.0f} "
              f"{row['images_per_s'] / base:>7.2f}x {row['first_call_s']:>13.2f}"
              + ("" if row["finite"] else "  (non-finite loss)"), flush=True)
        if trace:
            print(f"  device kernels of one call ({args.steps} steps), by total time:")
            row["kernels"] = []
            for name, total, count in device_kernels(trace, args.top):
                print(f"    {total / args.steps:8.3f} ms/step {count // args.steps:4d}x/step  {name[:110]}")
                row["kernels"].append({"name": name, "ms_per_step": total / args.steps, "per_step": count / args.steps})
    if args.json:
        figures = {"rows": rows, "matmul_precision": str(jax.config.jax_default_matmul_precision or "default"),
                   "xla_flags": os.environ.get("XLA_FLAGS", ""),
                   "settings": {k: v for k, v in vars(args).items() if k not in ("json", "out_dir")},
                   "ms_per_step_method": f"median of {args.repeats} calls of {args.steps} steps, after one that compiles"}
        bench_results.report(bench_results.write_result(args.json, figures, out_dir=args.out_dir))
    return rows


if __name__ == "__main__":
    main()
