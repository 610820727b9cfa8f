"""configs/fast.py on a GPU: several seeded runs of the whole recipe on the CIFAR-10 JPEGs, each
timed as airbench times itself (whitening init + training + the TTA evaluation), compiling
excluded (a warm-up run compiles every program first); writes mean and spread of the test
accuracy and the time per run (docs/fast.md).

    python bench/fast_gpu.py --data .gpudata/cifar10-jpeg.tar.gz --seeds 5 --json fast_gpu
    python bench/fast_gpu.py --smoke          # CPU: the same plumbing on tiny synthetic shapes

Each run draws its init, data order and augmentation from its seed (the config, and so every
compiled program, stays the same); the loop is the library's (create_train_state,
init_from_data, multistep.epoch_order and train_steps: on a GPU one compiled call per epoch with
the config's progress_updates=1, evaluate_dataset at the config's tta_level), without the
per-epoch evaluations and checkpoints of `cifar-jax train`. A run's clock starts before the
train state is made and stops when the TTA accuracy is on the host. `compile_s` is the warm-up
run's time minus the median run's.

--json NAME writes bench/results/NAME-DATE-DEVICE.json (bench/results.py): `runs` (seed,
test_acc (TTA), test_acc_tta0, init_s, train_s, eval_s, total_s), `acc_mean`, `acc_std`,
`acc_min`, `acc_max`, `total_s_median`, `train_s_median`, `compile_s`, `steps`, the config's
name and the settings. A SIGTERM (from `timeout`) still writes what finished, with `stopped`.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import pathlib
import signal
import statistics
import sys
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import numpy as np  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench import results as bench_results  # noqa: E402
from cifar_jax import load_dataset, multistep  # noqa: E402
from cifar_jax.config import apply_override, load_config_file, validate_config  # noqa: E402
from cifar_jax.steps import create_train_state, init_from_data  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=".gpudata/cifar10-jpeg.tar.gz", help="the CIFAR-10 JPEG archive")
    p.add_argument("--cache-dir", default="", help="image_folder's decoded-array cache ('' = ~/.cache/cifar_jax)")
    p.add_argument("--config", default="fast", help="the named config or file (default: fast)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override, repeatable")
    p.add_argument("--seeds", type=int, default=5, help="timed runs, seeds 0..N-1 (after one warm-up run)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny synthetic data, width 1/16, batch 256, 2 epochs, 2 seeds: the plumbing on CPU")
    bench_results.add_arguments(p)
    return p.parse_args(argv)


def make_config(args):
    config = load_config_file(args.config)
    config.num_classes = 10
    if args.smoke:
        config = load_config_file("fast:256") if args.config == "fast" else config
        config.dataset, config.synthetic_train_size, config.synthetic_test_size = "synthetic", 2048, 500
        config.width, config.num_epochs, config.eval_batch_size = 1 / 16, 2, 500
    else:
        config.dataset, config.data_dir, config.cache_dir = "image_folder", args.data, args.cache_dir
    for item in args.set:
        key, _, value = item.partition("=")
        apply_override(config, key, value)
    validate_config(config)
    return config


def one_run(config, seed: int, data, device_data) -> dict:
    """The recipe once, timed: (whitening) init, training, the TTA evaluation."""
    images, labels, test_images, test_labels = device_data
    n = len(data.train_labels)
    steps_per_epoch = math.ceil(n / config.batch_size)
    calls = steps_per_epoch // multistep.scan_length(steps_per_epoch, config.progress_updates)
    per_call = steps_per_epoch // calls
    start = time.perf_counter()
    init_rng, augment_rng, data_key = jax.random.split(jax.random.key(seed), 3)
    state = create_train_state(init_rng, config, steps_per_epoch, data.train_images.shape[1:])
    state = jax.block_until_ready(init_from_data(state, config, data.train_images))
    initialised = time.perf_counter()
    for epoch in range(config.num_epochs):
        order, mask = multistep.epoch_order(data_key, epoch, n, config.batch_size)
        for call in range(calls):
            part = slice(call * per_call, (call + 1) * per_call)
            state, metrics = multistep.train_steps(state, images, labels, order[part], mask[part], augment_rng)
    jax.block_until_ready(state)
    trained = time.perf_counter()
    accuracy = multistep.evaluate_dataset(state, test_images, test_labels, config.eval_batch_size)["accuracy"]
    done = time.perf_counter()
    plain = dataclasses.replace(state.step_config, tta_level=0)
    accuracy_tta0 = multistep.evaluate_dataset(state.replace(step_config=plain), test_images, test_labels,
                                               config.eval_batch_size)["accuracy"]
    return {"seed": seed, "test_acc": accuracy, "test_acc_tta0": accuracy_tta0,
            "final_train_loss": float(np.asarray(metrics["loss"])[-1]),
            "init_s": initialised - start, "train_s": trained - initialised, "eval_s": done - trained,
            "total_s": done - start}


class Stopped(Exception):
    pass


def _stop(signum, frame):
    raise Stopped(signal.Signals(signum).name)


def summary(runs: list[dict], warmup: dict | None) -> dict:
    if not runs:
        return {}
    accs = [r["test_acc"] for r in runs]
    out = {
        "acc_mean": statistics.fmean(accs), "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        "acc_min": min(accs), "acc_max": max(accs),
        "acc_tta0_mean": statistics.fmean(r["test_acc_tta0"] for r in runs),
        "total_s_median": statistics.median(r["total_s"] for r in runs),
        "train_s_median": statistics.median(r["train_s"] for r in runs),
        "eval_s_median": statistics.median(r["eval_s"] for r in runs),
    }
    if warmup is not None:
        out["compile_s"] = warmup["total_s"] - out["total_s_median"]
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    config = make_config(args)
    load_start = time.perf_counter()
    data = load_dataset(config)
    device_data = jax.device_put((data.train_images, data.train_labels, data.test_images, data.test_labels))
    steps = config.num_epochs * math.ceil(len(data.train_labels) / config.batch_size)
    print(f"data: {len(data.train_labels)} train / {len(data.test_labels)} test images ({config.dataset}, "
          f"{time.perf_counter() - load_start:.1f} s); {config.model} width {config.width:g}, {config.dtype}, "
          f"{config.num_epochs} epochs of batch {config.batch_size} ({steps} steps); "
          f"{jax.devices()[0].device_kind}, jax {jax.__version__}", flush=True)
    signal.signal(signal.SIGTERM, _stop)
    warmup, runs, stopped = None, [], None
    try:
        warmup = one_run(config, 1000, data, device_data)
        print(f"warm-up (compiles): {warmup['total_s']:.1f} s, test acc {warmup['test_acc']:.4f}", flush=True)
        for seed in range(args.seeds):
            run = one_run(config, seed, data, device_data)
            runs.append(run)
            print(f"seed {seed}: test acc {run['test_acc']:.4f} (without TTA {run['test_acc_tta0']:.4f}); "
                  f"{run['total_s']:.2f} s = init {run['init_s']:.2f} + train {run['train_s']:.2f} "
                  f"+ TTA eval {run['eval_s']:.2f}", flush=True)
    except Stopped as why:
        stopped = str(why)
        print(f"stopped by {stopped}: writing what finished", file=sys.stderr, flush=True)
    figures = {"config": args.config, "runs": runs, "warmup": warmup, "steps": steps, **summary(runs, warmup)}
    if runs:
        print(f"{len(runs)} runs: test acc {figures['acc_mean']:.4f} +- {figures['acc_std']:.4f} "
              f"(min {figures['acc_min']:.4f}, max {figures['acc_max']:.4f}); median {figures['total_s_median']:.2f} s "
              f"per run (train {figures['train_s_median']:.2f} s), compiling {figures.get('compile_s', 0):.1f} s",
              flush=True)
    if stopped:
        figures["stopped"] = stopped
    if args.json:
        figures["settings"] = {**vars(args), "train_images": len(data.train_labels),
                               "test_images": len(data.test_labels), "dtype": config.dtype,
                               "timing": "per run: create_train_state + init_from_data + training + the TTA "
                                         "evaluation, compiled programs warm (one warm-up run first)"}
        bench_results.report(bench_results.write_result(args.json, figures, out_dir=args.out_dir))
    return 1 if stopped else 0


if __name__ == "__main__":
    sys.exit(main())
