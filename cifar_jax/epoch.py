"""Many steps per compiled call: the fast path of the training loop.

The dataset stays on the device; each epoch's order is drawn on the device; a call runs
a `lax.scan` over a run of batches gathered from the resident arrays, with the old train
state donated. The host only launches calls and reads metrics back once per call, so the
accelerator is never left waiting on Python.
"""
from __future__ import annotations

import functools
import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from cifar_jax import hosts
from cifar_jax.errors import ConfigError
from cifar_jax.steps import _eval_step, _train_step

DATA_AXIS = "data"


def data_mesh(devices=None) -> Optional[Mesh]:
    """A 1-D mesh over all local devices (None for one device: nothing to shard)."""
    devices = jax.devices() if devices is None else list(devices)
    if len(devices) == 1:
        return None
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def check_divisible(batch_size: int, mesh: Optional[Mesh], key: str) -> None:
    if mesh is not None and batch_size % mesh.size:
        raise ConfigError(
            f"{key}={batch_size} does not split evenly over {mesh.size} devices; "
            f"set --config.{key} to a multiple of {mesh.size}"
        )


def replicate(tree, mesh: Optional[Mesh]):
    """Places every array of `tree` whole on every device of `mesh` (or leaves it be)."""
    if mesh is None:
        return jax.device_put(tree)
    return hosts.to_global(tree, NamedSharding(mesh, PartitionSpec()))


def batch_sharding(mesh: Optional[Mesh]) -> Optional[NamedSharding]:
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


def steps_per_call(steps: int, calls_wanted: int) -> int:
    """The largest divisor of `steps` not above steps / calls_wanted, so every call has
    the same length (one compilation); the whole epoch when no such divisor is near."""
    target = max(1, math.ceil(steps / max(1, calls_wanted)))
    size = max(d for d in range(1, target + 1) if steps % d == 0)
    return size if size * 4 >= target else steps


def scan_length(steps: int, calls_wanted: int) -> int:
    """Steps per compiled call on this backend.

    On CPU, one step per call: XLA:CPU runs convolutions inside a loop body several times
    slower than the same step on its own (measured 6-8x with jax 0.10 on 2 cores), while
    its per-call overhead is negligible next to a CPU step. Elsewhere, `steps_per_call`.
    """
    return 1 if jax.default_backend() == "cpu" else steps_per_call(steps, calls_wanted)


def _gather(images, labels, indices, mask, sharding):
    batch = {"image": images[indices], "label": labels[indices], "mask": mask}
    if sharding is not None:
        batch = jax.lax.with_sharding_constraint(batch, sharding)
    return batch


@functools.partial(jax.jit, donate_argnums=0, static_argnames="sharding")
def train_steps(state, images, labels, order, mask, rng, sharding=None):
    """Runs `len(order)` train steps in one call; returns the state and per-step metrics."""

    def body(state, xs):
        indices, batch_mask = xs
        return _train_step(state, _gather(images, labels, indices, batch_mask, sharding), rng)

    return _scan(body, state, (order, mask))


@functools.partial(jax.jit, static_argnames="sharding")
def eval_batches(state, images, labels, order, mask, sharding=None):
    """Per-batch eval metrics over (batches, batch) indices, in one call."""

    def body(_, xs):
        indices, batch_mask = xs
        return None, _eval_step(state, _gather(images, labels, indices, batch_mask, sharding))

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
