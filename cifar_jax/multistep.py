"""Many steps per compiled call: an epoch of training, and a test set's evaluation, as a
few compiled calls over data resident on the device(s).

The dataset stays on the device; each epoch's order is drawn on the device; a call runs
a `lax.scan` of `steps.train_step` over a run of batches gathered from the resident
arrays, with the old train state donated. The host only launches calls and reads metrics
back once per call, so the accelerator is never left waiting on Python. With several
devices the batches are split over a 1-D data mesh and the state is replicated.
"""
from __future__ import annotations

import functools
import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from cifar_jax import faults, hosts, progress
from cifar_jax.compiled import tuned_jit
from cifar_jax.errors import ConfigError
from cifar_jax.steps import eval_step, train_step

DATA_AXIS = "data"


def data_mesh(devices=None) -> Optional[Mesh]:
    """A 1-D mesh over all local devices (None for one device: nothing to shard)."""
    devices = jax.devices() if devices is None else list(devices)
    if len(devices) == 1:
        return None
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def check_divisible(batch_size: int, mesh: Optional[Mesh], key: str) -> None:
    """Raises ConfigError unless config `key`'s `batch_size` splits evenly over `mesh`."""
    if mesh is not None and batch_size % mesh.size:
        raise ConfigError(
            f"{key}={batch_size} does not split evenly over {mesh.size} devices; "
            f"set --config.{key} to a multiple of {mesh.size}"
        )


def replicate(tree, mesh: Optional[Mesh]):
    """Places every array of `tree` whole on every device of `mesh` (or on the one device)."""
    if mesh is None:
        # Committed to the device, whatever the arrays were: a fresh state is not, a state
        # restored from a checkpoint is, and the compiled steps of the two would differ (in
        # their sharding annotations), so a resumed run would miss the XLA cache and compile
        # its steps again.
        return jax.device_put(tree, jax.devices()[0])
    return hosts.to_global(tree, NamedSharding(mesh, PartitionSpec()))


def batch_sharding(mesh: Optional[Mesh]) -> Optional[NamedSharding]:
    """Batches split along their first axis over `mesh` (None for one device)."""
    return None if mesh is None else NamedSharding(mesh, PartitionSpec(DATA_AXIS))


@functools.partial(jax.jit, static_argnums=(2, 3))
def epoch_order(data_key: jax.Array, epoch, num_examples: int, batch_size: int):
    """The epoch's shuffled indices as (steps, batch) and the mask of real examples.

    Drawn on the device from (data key, epoch) alone, so a resumed run replays the same
    order; the last batch is padded (mask False) to the full size, so one compiled step
    serves the whole epoch.
    """
    order = jax.random.permutation(jax.random.fold_in(data_key, epoch), num_examples)
    return pad_to_batches(order, batch_size)


def pad_to_batches(indices: jax.Array, batch_size: int):
    """(steps, batch) indices padded with index 0, and the mask that marks real ones."""
    n = indices.shape[0]
    steps = math.ceil(n / batch_size)
    padded = jnp.zeros(steps * batch_size, jnp.int32).at[:n].set(indices)
    mask = jnp.arange(steps * batch_size) < n
    return padded.reshape(steps, batch_size), mask.reshape(steps, batch_size)


def fitted_eval_batch(batch_size: int, num_examples: int, devices: int = 1) -> int:
    """An evaluation batch no larger than the examples need (rounded up to a multiple of
    `devices`): a larger one is one padded batch too, with memory for nothing."""
    return min(batch_size, -(-num_examples // devices) * devices)


def steps_per_call(steps: int, calls_wanted: int) -> int:
    """The largest divisor of `steps` not above steps / calls_wanted, so every call has
    the same length (one compilation); the whole epoch when no such divisor is near."""
    target = max(1, math.ceil(steps / max(1, calls_wanted)))
    size = max(d for d in range(1, target + 1) if steps % d == 0)
    return size if size * 4 >= target else steps


def scan_length(steps: int, calls_wanted: int) -> int:
    """Steps per compiled call on this backend.

    On CPU, one step per call: XLA:CPU runs convolutions inside a loop body several times
    slower than the same step on its own (docs/speed.md), while its per-call overhead is
    negligible next to a CPU step. Elsewhere, `steps_per_call`.
    """
    return 1 if jax.default_backend() == "cpu" else steps_per_call(steps, calls_wanted)


def _gather(images, labels, indices, mask, sharding):
    # "index": the examples' dataset indices (alternating_flip flips by index; unused otherwise).
    batch = {"image": images[indices], "label": labels[indices], "mask": mask, "index": indices}
    if sharding is not None:
        batch = jax.lax.with_sharding_constraint(batch, sharding)
    return batch


@tuned_jit(donate_argnums=0, static_argnames="sharding")
def train_steps(state, images, labels, order, mask, rng, sharding=None):
    """`len(order)` calls of `train_step` in one compiled call (the old state is donated).

    Args:
      state: the train state.
      images, labels: the whole training set on the device(s).
      order, mask: (steps, batch) indices into it and the mask of real examples, e.g. a
        slice of `epoch_order`.
      rng: the run's augmentation key (the same every call).
      sharding: `batch_sharding(mesh)` with several devices, else None.

    Returns:
      (new state, metrics): `train_step`'s metrics, each stacked to (steps,).
    """

    def body(state, xs):
        indices, batch_mask = xs
        return train_step(state, _gather(images, labels, indices, batch_mask, sharding), rng)

    return _scan(body, state, (order, mask))


@tuned_jit(static_argnames="sharding")
def eval_batches(state, images, labels, order, mask, sharding=None):
    """`eval_step` on each batch of (batches, batch) indices `order`, in one compiled call.

    Returns:
      `eval_step`'s metrics, each stacked to (batches,).
    """

    def body(_, xs):
        indices, batch_mask = xs
        return None, eval_step(state, _gather(images, labels, indices, batch_mask, sharding))

    return _scan(body, None, (order, mask))[1]


def _scan(body, carry, xs):
    """lax.scan, but a single step runs as plain code (see scan_length: no loop on CPU)."""
    if jax.tree.leaves(xs)[0].shape[0] == 1:
        carry, out = body(carry, jax.tree.map(lambda x: x[0], xs))
        return carry, jax.tree.map(lambda x: x[None], out)
    return jax.lax.scan(body, carry, xs)


def weighted_mean(metrics: dict, key: str) -> float:
    """The exact mean over examples of per-batch means (batches weighted by their count)."""
    counts = np.asarray(metrics["count"], np.float64)
    return float(np.sum(np.asarray(metrics[key], np.float64) * counts) / np.sum(counts))


def evaluate_dataset(state, images, labels, batch_size: int, sharding=None) -> dict:
    """Exact loss and accuracy over a device-resident data set (e.g. the test set).

    One compiled call where the backend runs loops well, one per batch on CPU; the last
    batch is padded and masked, so every example counts once.

    A `batch_size` above the number of examples is cut to it (rounded up to a multiple of
    the devices): one batch either way, without memory for padding that holds no data.

    Returns:
      {"loss": float, "accuracy": float}.
    """
    batch_size = fitted_eval_batch(batch_size, len(labels), sharding.mesh.size if sharding is not None else 1)
    order, mask = pad_to_batches(jnp.arange(len(labels)), batch_size)
    if sharding is not None:
        order, mask = replicate((order, mask), sharding.mesh)
    size = scan_length(len(order), 1)
    results = [
        eval_batches(state, images, labels, order[i : i + size], mask[i : i + size], sharding=sharding)
        for i in range(0, len(order), size)
    ]
    merged = {key: np.concatenate([r[key] for r in hosts.fetch(results)]) for key in results[0]}
    return {"loss": weighted_mean(merged, "loss"), "accuracy": weighted_mean(merged, "accuracy")}


class NonFiniteStep(Exception):
    """A train step's loss or gradients were NaN/inf (and the state does not skip such
    steps); `index` is the step's index within the epoch."""

    def __init__(self, index: int, learning_rate: float):
        super().__init__(f"non-finite step {index} (learning rate {learning_rate:.6g})")
        self.index, self.learning_rate = index, learning_rate


def train_epoch(state, images, labels, order, mask, rng, calls: int, desc: str, sharding=None, stop=None):
    """One pass over the data in `calls` equal compiled calls of `train_steps`, with a
    progress bar (`desc`) in the primary process (a plain line now and then when stderr is
    not a terminal: cifar_jax.progress).

    The host stays one call ahead of the device: it waits for the previous call only to
    advance the progress bar, while the next is already queued. Each finished call's
    `finite` flags are checked then (no extra sync): a NaN/inf step raises NonFiniteStep
    unless `state.step_config.skip_nonfinite`. A set `stop` (faults.StopRequest) ends the
    epoch at the next call boundary.

    Returns:
      (state, summary): summary holds the epoch's `loss`, `accuracy` (means over real
      examples of the finite steps), `last_lr` and `skipped_steps`; it is None when `stop`
      ended the epoch early (the state is then a partial epoch's).
    """
    steps, batch = order.shape
    order = order.reshape(calls, steps // calls, batch)
    mask = mask.reshape(calls, steps // calls, batch)
    results = []  # each finished call's metrics, on the host, fetched once

    def finish(metrics):  # waits for that call only
        results.append(hosts.fetch(metrics))
        _check_finite(state, results[-1], (len(results) - 1) * (steps // calls))
        bar.update(steps // calls)

    with progress.epoch_progress(steps, desc, enabled=hosts.is_primary()) as bar:
        pending = None  # the metrics of the call the device is still running
        for call in range(calls):
            if stop and call:
                return state, None
            state, metrics = train_steps(state, images, labels, order[call], mask[call], rng, sharding=sharding)
            if pending is not None:
                finish(pending)
            pending = metrics
        finish(pending)
    merged = {key: [x for r in results for x in r[key]] for key in results[0]}
    finite = np.asarray(merged["finite"], bool)
    # Skipped (non-finite) steps count for nothing in the means.
    merged["count"] = np.where(finite, np.asarray(merged["count"], np.float64), 0.0)
    merged["loss"] = np.where(finite, np.asarray(merged["loss"], np.float64), 0.0)
    summary = {
        "loss": weighted_mean(merged, "loss") if finite.any() else float("nan"),
        "accuracy": weighted_mean(merged, "accuracy") if finite.any() else float("nan"),
        "last_lr": float(merged["learning_rate"][-1]),
        "skipped_steps": int(np.sum(~finite)),
    }
    return state, summary


def _check_finite(state, metrics, first_index: int) -> None:
    """Raises NonFiniteStep (index within the epoch) at a call's first NaN/inf step."""
    if state.step_config.skip_nonfinite:
        return
    bad = faults.first_nonfinite(metrics)
    if bad is not None:
        lr = float(np.asarray(metrics["learning_rate"]).reshape(-1)[bad])
        raise NonFiniteStep(first_index + bad, lr)
