"""Stopping a run cleanly: SIGINT/SIGTERM during training, and NaN/inf losses.

The training loop checks both once per compiled call, from facts it already has (a flag
set by the signal handler; the per-step `finite` metric that comes back with each call),
so neither adds a host-device sync per step.
"""
from __future__ import annotations

import contextlib
import signal
import threading

import numpy as np

from cifar_jax.errors import CifarJaxError


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped training; `exit_code` is 128 + the signal number."""

    def __init__(self, signum: int, message: str):
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(message)


class NonFiniteError(CifarJaxError):
    """The loss or the gradients of a train step were NaN or infinite."""


class StopRequest:
    """Set by SIGINT/SIGTERM while `catch_signals` is active; read at call boundaries."""

    def __init__(self):
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""


@contextlib.contextmanager
def catch_signals(signals=(signal.SIGINT, signal.SIGTERM)):
    """Yields a StopRequest that the first SIGINT/SIGTERM sets; a second one of the same
    kind stops at once (KeyboardInterrupt / SystemExit). Outside the main thread, where
    Python cannot install handlers, nothing is caught."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum, frame):
        if request.signum is not None:  # asked twice: stop now, without a checkpoint
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        request.signum = signum

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield request
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def first_nonfinite(metrics: dict):
    """Index of the first step whose `finite` metric is False in a call's metrics, or None."""
    finite = metrics.get("finite")
    if finite is None:
        return None
    bad = np.flatnonzero(~np.asarray(finite, bool).reshape(-1))
    return int(bad[0]) if bad.size else None
