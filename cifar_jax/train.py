"""`python -m cifar_jax.train --config configs/default.py --workdir runs/seed`

The outer loop: data to the device, one jit step per batch, evaluation, logging. Side
effects (files, printing, progress) live here; the steps in cifar_jax.steps are pure.
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from cifar_jax.config import parse_command_line, validate_config
from cifar_jax.data import load_dataset
from cifar_jax.errors import CifarJaxError
from cifar_jax.steps import TrainState, create_train_state, eval_on_indices, train_step_on_indices

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"


def epoch_order(seed: int, epoch: int, num_examples: int, batch_size: int):
    """This epoch's shuffled indices as (steps, batch) plus a mask of real examples.

    The last batch is padded (mask False) to the full batch size, so it needs no
    second compilation; the order depends only on (seed, epoch).
    """
    order = np.random.default_rng((seed, epoch)).permutation(num_examples)
    return _padded_batches(order, batch_size)


def _padded_batches(indices: np.ndarray, batch_size: int):
    steps = math.ceil(len(indices) / batch_size)
    padded = np.zeros(steps * batch_size, np.int32)
    padded[: len(indices)] = indices
    mask = np.arange(steps * batch_size) < len(indices)
    return padded.reshape(steps, batch_size), mask.reshape(steps, batch_size)


def _weighted_mean(metrics: list[dict], key: str) -> float:
    counts = np.array([m["count"] for m in metrics])
    values = np.array([m[key] for m in metrics])
    return float(np.sum(values * counts) / np.sum(counts))


def evaluate(state: TrainState, images, labels, batch_size: int) -> dict:
    """Exact loss and accuracy over a device-resident test set, in fixed-size batches."""
    indices, mask = _padded_batches(np.arange(len(labels)), batch_size)
    results = [
        eval_on_indices(state, images, labels, jnp.asarray(i), jnp.asarray(m))
        for i, m in zip(indices, mask)
    ]
    results = jax.device_get(results)
    return {"loss": _weighted_mean(results, "loss"), "accuracy": _weighted_mean(results, "accuracy")}


def train_epoch(state, images, labels, order, mask, rng, desc: str):
    """One pass over the data; metrics are pulled from the device once, at the end."""
    results = []
    for indices, batch_mask in tqdm(zip(order, mask), total=len(order), desc=desc, leave=False):
        state, metrics = train_step_on_indices(
            state, images, labels, jnp.asarray(indices), jnp.asarray(batch_mask), rng
        )
        if results:
            # Stay one step ahead of the device so the progress bar tells the truth.
            jax.block_until_ready(results[-1])
        results.append(metrics)
    results = jax.device_get(results)
    summary = {
        "loss": _weighted_mean(results, "loss"),
        "accuracy": _weighted_mean(results, "accuracy"),
        "last_lr": float(results[-1]["learning_rate"]),
    }
    return state, summary


def parameter_summary(params) -> tuple[int, int]:
    """(number of parameters, bytes they occupy)."""
    leaves = jax.tree.leaves(params)
    return sum(x.size for x in leaves), sum(x.size * x.dtype.itemsize for x in leaves)


def _check_workdir_is_free(workdir: str) -> pathlib.Path:
    path = pathlib.Path(workdir)
    if path.exists() and not path.is_dir():
        raise CifarJaxError(f"workdir {workdir} is a file; pass a directory to --workdir")
    if (path / METRICS_FILE).exists() or (path / CONFIG_FILE).exists():
        raise CifarJaxError(
            f"workdir {workdir} already holds a run; pass a new --workdir or delete the old one"
        )
    return path


def _write_json_atomically(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def train_and_evaluate(config, workdir: str) -> TrainState:
    """Trains as `config` says, evaluating on the test set after every epoch.

    Writes `config.json` (the resolved config) and `metrics.jsonl` (one line per epoch)
    into `workdir`, and returns the final train state.
    """
    validate_config(config)
    path = _check_workdir_is_free(workdir)  # before the slow data loading
    start = time.perf_counter()
    data = load_dataset(config)  # also checks num_classes against the data
    print(
        f"Data: {config.dataset}, {len(data.train_labels)} train / {len(data.test_labels)} test "
        f"images of {data.train_images.shape[1:]}, {data.num_classes} classes "
        f"({time.perf_counter() - start:.1f}s to load)"
    )

    steps_per_epoch = math.ceil(len(data.train_labels) / config.batch_size)
    init_rng, augment_rng = jax.random.split(jax.random.key(config.seed))
    state = create_train_state(init_rng, config, steps_per_epoch, data.train_images.shape[1:])
    count, size = parameter_summary(state.params)
    print(f"Model: ResNet9 width {config.width}, {count:,} parameters, "
          f"{size / 1e6:.2f} MB ({size / 2**20:.1f} MiB) as float32")

    path.mkdir(parents=True, exist_ok=True)
    _write_json_atomically(path / CONFIG_FILE, config.to_json(indent=2))

    train_images, train_labels = jax.device_put((data.train_images, data.train_labels))
    test_images, test_labels = jax.device_put((data.test_images, data.test_labels))
    for epoch in range(config.num_epochs):
        epoch_start = time.perf_counter()
        order, mask = epoch_order(config.seed, epoch, len(data.train_labels), config.batch_size)
        state, train = train_epoch(
            state, train_images, train_labels, order, mask, augment_rng, f"epoch {epoch}"
        )
        train_seconds = time.perf_counter() - epoch_start
        test = evaluate(state, test_images, test_labels, config.eval_batch_size)
        record = {
            "epoch": epoch,
            "step": int(state.step),
            "last_lr": train["last_lr"],
            "train_loss": train["loss"],
            "train_acc": train["accuracy"],
            "test_loss": test["loss"],
            "test_acc": test["accuracy"],
            "train_seconds": train_seconds,
            "epoch_seconds": time.perf_counter() - epoch_start,
        }
        tqdm.write(
            f"Epoch [{epoch}], last_lr: {record['last_lr']:.5f}, train_loss: {record['train_loss']:.4f}, "
            f"test_loss: {record['test_loss']:.4f}, test_acc: {record['test_acc']:.4f} "
            f"({record['epoch_seconds']:.2f}s)"
        )
        with open(path / METRICS_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")
    return state


def main(argv: list[str] | None = None) -> int:
    try:
        config, workdir = parse_command_line(sys.argv[1:] if argv is None else argv)
        train_and_evaluate(config, workdir)
    except CifarJaxError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
