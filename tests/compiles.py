"""Counting compilations through JAX's public monitoring events.

JAX records `/jax/core/compile/jaxpr_to_mlir_module_duration` each time it lowers a
jitted function for a new signature (before the persistent compilation cache is looked
up, so a cache hit on disk still counts: it is a new entry in the function's own cache),
with the function's name, e.g. "jit(train_steps)".
"""
from __future__ import annotations

import collections
import contextlib

import jax

LOWERING_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"


@contextlib.contextmanager
def count_compilations():
    """Yields a Counter: function name (e.g. "train_steps") -> compilations inside the block."""
    counts = collections.Counter()

    def listener(event, duration, **kwargs):
        if event == LOWERING_EVENT:
            name = str(kwargs.get("fun_name", ""))
            if name.startswith("jit(") and name.endswith(")"):
                name = name[len("jit("):-1]
            counts[name] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield counts
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
