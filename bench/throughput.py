"""Training throughput: the plain per-step loop against the compiled multi-step epoch.

    python bench/throughput.py                      # the seed model on 50,000 images
    python bench/throughput.py --width 0.125 --train-size 512 --batch-size 64 --epochs 2  # CPU smoke

For float32 and bfloat16 compute, prints images per second and seconds per epoch (the
median of --epochs timed epochs, after one untimed epoch that compiles), and the first
epoch's seconds, which include compilation. "plain" is a per-step Python loop: indices
sent from the host every step, one jit call per step. "epoch" is what
`python -m cifar_jax.train` runs: cifar_jax.multistep's scanned steps, data on the device.
Synthetic random images: the speed of a step does not depend on what the pixels show.

--json NAME also writes bench/results/NAME-DATE-DEVICE.json (bench/results.py) with `rows`
of `loop`, `dtype`, `s_per_epoch`, `images_per_s`, `first_epoch_s` and `compile_s`, where
compile_s = the first epoch's seconds minus the steady median (an estimate of compiling:
the first epoch also pays the first transfers), and the settings.
"""
from __future__ import annotations

import argparse
import math
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from bench import results  # noqa: E402
from cifar_jax import multistep  # noqa: E402
from cifar_jax.config import load_config_file  # noqa: E402
from cifar_jax.steps import create_train_state, train_step  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


def plain_epoch(state, images, labels, epoch, batch_size, rng):
    """The plain port: host-side order, one jit call per step, a sync at the end."""
    n = len(labels)
    order = np.random.default_rng(epoch).permutation(n)
    for step in range(math.ceil(n / batch_size)):
        idx = order[step * batch_size : (step + 1) * batch_size]
        if len(idx) < batch_size:  # pad and mask, as the real loop does: one shape
            mask = np.arange(batch_size) < len(idx)
            idx = np.concatenate([idx, np.zeros(batch_size - len(idx), idx.dtype)])
        else:
            mask = np.ones(batch_size, bool)
        idx = jnp.asarray(idx)
        batch = {"image": images[idx], "label": labels[idx], "mask": jnp.asarray(mask)}
        state, metrics = train_step(state, batch, rng)
    jax.block_until_ready(metrics)
    return state


def measure(mode, dtype, args):
    config = load_config_file(str(REPO / "configs" / "default.py"))
    config.width, config.num_classes, config.dtype = args.width, args.num_classes, dtype
    config.batch_size, config.num_epochs = args.batch_size, args.epochs + 1
    n = args.train_size
    steps = math.ceil(n / args.batch_size)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8))
    labels = jnp.asarray(rng.integers(0, args.num_classes, n).astype(np.int32))
    state = jax.device_put(create_train_state(jax.random.key(0), config, steps))
    key, data_key = jax.random.key(1), jax.random.key(2)
    calls = steps // multistep.scan_length(steps, args.calls_per_epoch)

    def one_epoch(state, epoch):
        if mode == "plain":
            return plain_epoch(state, images, labels, epoch, args.batch_size, key)
        order, mask = multistep.epoch_order(data_key, epoch, n, args.batch_size)
        state, _ = multistep.train_epoch(state, images, labels, order, mask, key, calls, "", None)
        return state

    times = []
    for epoch in range(args.epochs + 1):
        start = time.perf_counter()
        state = one_epoch(state, epoch)
        jax.block_until_ready(state.params)
        times.append(time.perf_counter() - start)
    median = statistics.median(times[1:])
    return {"mode": mode, "dtype": dtype, "median": median, "ips": n / median, "first": times[0]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--train-size", type=int, default=50_000)
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per setting")
    parser.add_argument("--calls-per-epoch", type=int, default=8)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--modes", default="plain,epoch")
    results.add_arguments(parser)
    args = parser.parse_args(argv)
    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}; "
          f"width {args.width}, batch {args.batch_size}, {args.train_size} images/epoch")
    rows = [measure(m, d, args) for d in args.dtypes.split(",") for m in args.modes.split(",")]
    base = rows[0]["median"]
    print(f"{'loop':<6} {'dtype':<9} {'s/epoch':>9} {'images/s':>10} {'first epoch s':>14} {'speedup':>8}")
    for r in rows:
        print(f"{r['mode']:<6} {r['dtype']:<9} {r['median']:>9.3f} {r['ips']:>10,.0f} {r['first']:>14.2f} {base / r['median']:>7.2f}x")
    if args.json:
        json_rows = [{"loop": r["mode"], "dtype": r["dtype"], "s_per_epoch": r["median"], "images_per_s": r["ips"],
                      "first_epoch_s": r["first"], "compile_s": max(0.0, r["first"] - r["median"])} for r in rows]
        figures = {
            "rows": json_rows,
            "compile_s_method": "first epoch minus the median of the timed epochs",
            "s_per_epoch_method": f"median of {args.epochs} epochs after the first",
            "matmul_precision": str(jax.config.jax_default_matmul_precision or "default"),
            "settings": {"width": args.width, "num_classes": args.num_classes, "batch_size": args.batch_size,
                         "train_size": args.train_size, "epochs": args.epochs,
                         "calls_per_epoch": args.calls_per_epoch, "data": "synthetic uint8, on the device"},
        }
        results.report(results.write_result(args.json, figures, out_dir=args.out_dir))
    return rows


if __name__ == "__main__":
    main()
