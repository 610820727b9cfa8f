"""One run over several processes (hosts): starting JAX's distributed runtime, placing
host data on every device, reading replicated results back, and who writes the files.

Every process runs the same program on the same data (each loads the whole dataset:
CIFAR is small); the devices of all processes form one data-parallel mesh, so a batch is
split over all of them and the state is replicated. Process 0, the primary, alone writes
`config.json`, `metrics.jsonl`, plots and the lock file and prints; Orbax coordinates the
checkpoint writes itself. With one process every function here is a no-op or a plain
`jax.device_put` / `np.asarray`.
"""
from __future__ import annotations

import os

import jax
import numpy as np
from jax.experimental import multihost_utils

from cifar_jax.errors import ConfigError

ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def initialize_from_env() -> None:
    """Starts jax.distributed when JAX_NUM_PROCESSES > 1 is set, with JAX_PROCESS_ID and
    JAX_COORDINATOR_ADDRESS (host:port of process 0). Must run before JAX computes
    anything. Clusters that JAX detects itself (SLURM, Open MPI, Kubernetes, Cloud TPU)
    need only JAX_NUM_PROCESSES; without it nothing happens (one process)."""
    count = os.environ.get(ENV_NUM_PROCESSES, "").strip()
    if not count or jax.distributed.is_initialized():
        return
    try:
        num_processes = int(count)
        process_id = os.environ.get(ENV_PROCESS_ID, "").strip()
        process_id = int(process_id) if process_id else None
    except ValueError:
        raise ConfigError(f"{ENV_NUM_PROCESSES}={count!r} and {ENV_PROCESS_ID} must be integers, "
                          f"e.g. {ENV_NUM_PROCESSES}=2 {ENV_PROCESS_ID}=0") from None
    if num_processes <= 1:
        return
    try:
        jax.distributed.initialize(num_processes=num_processes, process_id=process_id)
    except (ValueError, TypeError, RuntimeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"cannot start {num_processes} processes ({first}); set JAX_COORDINATOR_ADDRESS="
                          f"host:port of process 0 and {ENV_PROCESS_ID}=0..{num_processes - 1} in each") from None


def is_primary() -> bool:
    """True in the process that writes the run's files (process 0)."""
    return jax.process_index() == 0


def multi_process() -> bool:
    return jax.process_count() > 1


def to_global(tree, sharding):
    """`jax.device_put(tree, sharding)`; with several processes, through host memory, as
    a process-local array cannot be put on other processes' devices directly."""
    if not multi_process():
        return jax.device_put(tree, sharding)

    def one(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = jax.device_put(np.asarray(jax.random.key_data(x)), sharding)
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        return jax.device_put(np.asarray(x), sharding)

    return jax.tree.map(one, tree)


def local_value(x) -> np.ndarray:
    """The value of a replicated array as numpy, read from this process's own copy."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(x.addressable_data(0))
    return np.asarray(x)


def fetch(tree):
    """`jax.device_get` for trees of replicated arrays that may span processes."""
    return jax.tree.map(local_value, tree)


def sync(name: str) -> None:
    """Waits until every process has arrived here (nothing to wait for with one)."""
    if multi_process():
        multihost_utils.sync_global_devices(name)
