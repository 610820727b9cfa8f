"""The fast recipe (configs/fast.py, airbench94) against the seed recipe (configs/default.py) on
the real CIFAR-10 JPEGs, on the CPU, with the same wall-clock training budget; prints both test
accuracies (docs/fast.md).

    # The measurement (about 8 minutes on the project's 2-core CPU, both recipes):
    python bench/fast_cpu.py --json fast_cpu
    # A one-minute smoke run of the same plumbing:
    python bench/fast_cpu.py --budget 10 --train-subset 2048 --test-subset 500 --recipes fast

Both recipes train on the same class-balanced random subset of the training images and are
evaluated on the same subset of the test images. Each recipe's schedule must know its length,
so a budget becomes whole epochs: a recipe's step is compiled and timed first (--calibrate-steps
steps after the compiling one), then it trains max(1, floor(budget / epoch time)) epochs from a
fresh state (compiled again if that is another number of epochs than the calibration's, whose
schedule was 2 epochs long). The budget (--budget 0, the default) is the seed recipe's: the
seed trains first, one epoch or as many as --seed-budget allows, and the fast recipe gets the
seed's measured training time. "train_s" is the training's wall time without compiling (the
first step's time minus a steady step's); evaluation is timed apart. The fast recipe is
evaluated with its test-time augmentation (level 2) and without it.

The loop is the library's (create_train_state, init_from_data, multistep.epoch_order and
train_steps: one step per compiled call on CPU, as `cifar-jax train` runs there), without the
per-epoch evaluation and checkpoints of `cifar-jax train`. Each recipe computes in its own
dtype (fast: bfloat16, seed: float32) unless --dtype says otherwise. On the CPU the fast recipe
runs at batch 256 by default (--fast-batch; `fast:256`: airbench's learning rate and weight
decay rescaled for it), so that a few minutes hold tens of steps rather than a handful.

--json NAME writes bench/results/NAME-DATE-cpu.json (bench/results.py) with per recipe:
`epochs`, `steps`, `train_s`, `compile_s`, `s_per_step`, `eval_s`, `test_acc` (and the fast
recipe's `test_acc_tta0`), `history` (per-epoch train loss and seconds), and the settings.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import pathlib
import sys
import time

import jax
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench import results as bench_results  # noqa: E402
from cifar_jax import load_dataset, multistep  # noqa: E402
from cifar_jax.config import load_config_file, validate_config  # noqa: E402
from cifar_jax.data import Dataset  # noqa: E402
from cifar_jax.steps import create_train_state, init_from_data  # noqa: E402

# ../shared/data beside the main checkout; ../../shared/data beside a worktree of /work/wt/NAME.
DATA_CANDIDATES = [REPO.parent / "shared/data/cifar10-jpeg.tar.gz", REPO.parents[1] / "shared/data/cifar10-jpeg.tar.gz"]
RECIPES = {"fast": "fast", "seed": "default"}  # name -> named config
CALIBRATION_EPOCHS = 2


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    default_data = next((str(c) for c in DATA_CANDIDATES if c.is_file()), str(DATA_CANDIDATES[0]))
    p.add_argument("--data", default=default_data, help="the CIFAR-10 JPEG archive (image_folder layout)")
    p.add_argument("--cache-dir", default="", help="image_folder's decoded-array cache ('' = ~/.cache/cifar_jax)")
    p.add_argument("--train-subset", type=int, default=3072, help="training images (class-balanced, seeded)")
    p.add_argument("--test-subset", type=int, default=2000, help="test images (class-balanced, seeded)")
    p.add_argument("--budget", type=float, default=0.0,
                   help="training seconds per recipe (compiling excluded); 0 = the seed recipe's time")
    p.add_argument("--seed-budget", type=float, default=0.0,
                   help="with --budget 0: the seed recipe's training seconds (0: one epoch)")
    p.add_argument("--recipes", default="seed,fast", help="comma-separated, trained in this order: seed, fast")
    p.add_argument("--fast-batch", type=int, default=256,
                   help="the fast recipe's batch size, its lr and weight decay set for it (configs/fast.py "
                        "fast:BATCH); 0 = the recipe's 1024")
    p.add_argument("--dtype", default="", help="compute dtype of both recipes ('' = each recipe's own)")
    p.add_argument("--calibrate-steps", type=int, default=1, help="timed steps after the compiling one")
    p.add_argument("--seed", type=int, default=0)
    bench_results.add_arguments(p)
    return p.parse_args(argv)


def balanced_subset(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Sorted indices of `count` examples, as many per class as can be (a seeded draw)."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = -(-count // len(classes))
    picked = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes])
    return np.sort(rng.permutation(picked)[:count])


def subset(data: Dataset, train: int, test: int, seed: int) -> Dataset:
    keep_train = balanced_subset(data.train_labels, train, seed)
    keep_test = balanced_subset(data.test_labels, test, seed + 1)
    return Dataset(data.train_images[keep_train], data.train_labels[keep_train],
                   data.test_images[keep_test], data.test_labels[keep_test], data.class_names)


def recipe_config(name: str, args, epochs: int):
    spec = RECIPES[name]
    if name == "fast" and args.fast_batch:
        spec = f"fast:{args.fast_batch}"
    config = load_config_file(spec)
    config.dataset, config.data_dir, config.cache_dir = "image_folder", args.data, args.cache_dir
    config.num_classes, config.num_epochs, config.seed = 10, epochs, args.seed
    config.dtype = args.dtype or config.dtype
    # Test-time views multiply an evaluation batch (6 at level 2): keep CPU memory modest.
    config.eval_batch_size = min(config.eval_batch_size, 500)
    validate_config(config)
    return config


class Trainer:
    """A fresh state of `config` (data init included) and its steps over the resident data."""

    def __init__(self, config, data: Dataset, device_data):
        self.config, self.data = config, data
        self.images, self.labels = device_data
        self.steps_per_epoch = math.ceil(len(data.train_labels) / config.batch_size)
        init_rng, self.augment_rng, self.data_key = jax.random.split(jax.random.key(config.seed), 3)
        state = create_train_state(init_rng, config, self.steps_per_epoch, data.train_images.shape[1:])
        self.state = jax.block_until_ready(init_from_data(state, config, data.train_images))

    def epoch(self, epoch: int, max_steps: int | None = None):
        """Trains one epoch (or its first `max_steps` steps); returns each step's seconds and the
        mean train loss."""
        order, mask = multistep.epoch_order(self.data_key, epoch, len(self.data.train_labels), self.config.batch_size)
        seconds, losses = [], []
        for i in range(len(order) if max_steps is None else max_steps):
            start = time.perf_counter()
            self.state, metrics = multistep.train_steps(self.state, self.images, self.labels, order[i : i + 1],
                                                        mask[i : i + 1], self.augment_rng)
            losses.append(float(metrics["loss"][0]))  # waits for the step
            seconds.append(time.perf_counter() - start)
        return seconds, float(np.mean(losses))


def evaluate(state, test_images, test_labels, batch_size: int, tta_level: int):
    state = state.replace(step_config=dataclasses.replace(state.step_config, tta_level=tta_level))
    start = time.perf_counter()
    accuracy = multistep.evaluate_dataset(state, test_images, test_labels, batch_size)["accuracy"]
    return accuracy, time.perf_counter() - start


def run_recipe(name: str, args, data: Dataset, device_data, test_data, budget: float) -> dict:
    print(f"== {name}: calibrating (compile + {args.calibrate_steps} steps, a {CALIBRATION_EPOCHS}-epoch schedule)",
          flush=True)
    config = recipe_config(name, args, CALIBRATION_EPOCHS)
    trainer = Trainer(config, data, device_data)
    seconds, _ = trainer.epoch(0, 1 + args.calibrate_steps)
    s_per_step = float(np.median(seconds[1:])) if len(seconds) > 1 else seconds[0]
    compile_s = seconds[0] - s_per_step
    epoch_s = s_per_step * trainer.steps_per_epoch
    epochs = max(1, int(budget // epoch_s))
    print(f"   {s_per_step:.3f} s/step, {trainer.steps_per_epoch} steps/epoch ({epoch_s:.1f} s), first step "
          f"{seconds[0]:.1f} s: {epochs} epochs for "
          + (f"a budget of {budget:.0f} s" if budget >= 1 else "one epoch"), flush=True)
    if epochs != CALIBRATION_EPOCHS:
        config = recipe_config(name, args, epochs)
    trainer = Trainer(config, data, device_data)
    history, train_s, step_seconds = [], 0.0, []
    for epoch in range(epochs):
        seconds, loss = trainer.epoch(epoch)
        step_seconds += seconds
        history.append({"epoch": epoch, "train_loss": loss, "seconds": sum(seconds)})
        print(f"   epoch {epoch}: train loss {loss:.4f} ({sum(seconds):.1f} s)", flush=True)
    steady = float(np.median(step_seconds[1:])) if len(step_seconds) > 1 else step_seconds[0]
    first_compile = max(0.0, step_seconds[0] - steady)
    train_s = sum(step_seconds) - first_compile
    result = {
        "config": RECIPES[name] if not (name == "fast" and args.fast_batch) else f"fast:{args.fast_batch}",
        "model": config.model, "batch_size": config.batch_size, "dtype": config.dtype,
        "budget_s": budget, "epochs": epochs, "steps": epochs * trainer.steps_per_epoch, "train_s": train_s,
        "compile_s": first_compile, "calibration_compile_s": compile_s, "s_per_step": steady,
        "history": history,
    }
    test_images, test_labels = test_data
    levels = [config.tta_level] + ([0] if config.tta_level else [])
    for level in levels:
        accuracy, eval_s = evaluate(trainer.state, test_images, test_labels, config.eval_batch_size, level)
        suffix = "" if level == config.tta_level else f"_tta{level}"
        result["test_acc" + suffix], result["eval_s" + suffix] = accuracy, eval_s
        print(f"   test accuracy {accuracy:.4f} (tta level {level}; evaluation {eval_s:.1f} s with compiling)",
              flush=True)
    result["tta_level"] = config.tta_level
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    unknown = sorted(set(names) - set(RECIPES))
    if unknown:
        print(f"error: unknown recipe(s) {unknown}; use {', '.join(RECIPES)}", file=sys.stderr)
        return 2
    if not pathlib.Path(args.data).is_file():
        print(f"error: no CIFAR-10 JPEG archive at {args.data}; pass --data", file=sys.stderr)
        return 2
    load_start = time.perf_counter()
    data = subset(load_dataset(recipe_config(names[0], args, CALIBRATION_EPOCHS)), args.train_subset,
                  args.test_subset, args.seed)
    print(f"data: {len(data.train_labels)} train / {len(data.test_labels)} test images of {args.data} "
          f"({time.perf_counter() - load_start:.1f} s); {jax.devices()[0].device_kind}, jax {jax.__version__}",
          flush=True)
    device_data = jax.device_put((data.train_images, data.train_labels))
    test_data = jax.device_put((data.test_images, data.test_labels))
    results = {}
    for name in names:
        budget = args.budget
        if not budget:  # the seed's time: one epoch (or --seed-budget), then the same for the others
            budget = results["seed"]["train_s"] if "seed" in results else (args.seed_budget or 1e-9)
        results[name] = run_recipe(name, args, data, device_data, test_data, budget)

    print()
    print(f"{'recipe':<8} | {'epochs':>6} | {'train s':>7} | {'s/step':>6} | {'test acc':>8} | note")
    for name, r in results.items():
        note = f"tta {r['tta_level']}" + (f"; {r['test_acc_tta0']:.4f} without" if "test_acc_tta0" in r else "")
        print(f"{name:<8} | {r['epochs']:>6} | {r['train_s']:>7.1f} | {r['s_per_step']:>6.3f} | "
              f"{r['test_acc']:>8.4f} | {note}")
    verdict = None
    if {"fast", "seed"} <= set(results):
        fast, seed = results["fast"], results["seed"]
        verdict = {"fast_minus_seed": fast["test_acc"] - seed["test_acc"],
                   "fast_tta0_minus_seed": fast.get("test_acc_tta0", fast["test_acc"]) - seed["test_acc"],
                   "fast_beats_seed": fast["test_acc"] > seed["test_acc"]}
        print(f"fast - seed: {verdict['fast_minus_seed']:+.4f} (without TTA {verdict['fast_tta0_minus_seed']:+.4f})")
    total_s = time.perf_counter() - started
    print(f"total {total_s:.0f} s")
    if args.json:
        figures = {"recipes": results, "total_s": total_s,
                   "settings": {**vars(args), "train_images": len(data.train_labels),
                                "test_images": len(data.test_labels), "cpu_threads": _cpu_count()}}
        if verdict:
            figures["comparison"] = verdict
        bench_results.report(bench_results.write_result(args.json, figures, out_dir=args.out_dir))
    return 0


def _cpu_count():
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


if __name__ == "__main__":
    sys.exit(main())
