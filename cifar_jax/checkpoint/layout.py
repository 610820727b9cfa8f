"""What a checkpoint folder holds and the errors about it: the names and types shared by
the writing side (`manager`) and the reading side (`restoring`), which import this
module and not each other's internals."""
from __future__ import annotations

import gc
import hashlib
import logging
import os
import pathlib
import sys
import warnings

import jax
import numpy as np

from cifar_jax import hosts
from cifar_jax.errors import CifarJaxError
from cifar_jax.run_layout import CHECKPOINT_DIR, CONFIG_FILE  # noqa: F401  (re-exported to manager, restoring)

DAMAGED_DIR = "checkpoints_damaged"  # damaged checkpoints are moved here when a run resumes
FOREIGN_DIR = "checkpoints_other_config"  # and checkpoints of runs with another config here
FORMAT_VERSION = 1
ARRAY_ITEMS = ("params", "batch_stats", "train")
META_ITEM = "meta"
META_FILE = "metadata"  # the meta item's JSON file (Orbax's JsonCheckpointHandler's default)
BEST_METRIC = "test_acc"
# The meta's "layer_names": 2 since cifar_jax 0.2.0, whose zoo models below carry torchvision's
# layer names (`layer1_0_conv1`); 0.1.0 and earlier wrote no such key and named their layers
# as Flax does (`layer1_0/Conv_0`), so their checkpoints of these models are refused. ResNet9's
# and the imagenet_* models' trees did not change: theirs restore whatever the key says.
LAYER_NAMES = 2
RENAMED_MODELS = frozenset({"resnet18", "resnet50", "resnet152", "vgg16", "mobilenet_v2", "efficientnet_b0"})


class CheckpointWriteError(CifarJaxError, OSError):
    """A checkpoint could not be written (disk full, read-only or vanished folder, ...)."""


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped (damaged or of another config) while resuming."""


class DamagedCheckpoint(CifarJaxError):
    """A checkpoint folder that is incomplete or unreadable."""

    def __init__(self, step: int, path: pathlib.Path, reason: str):
        self.step, self.path, self.reason = step, path, reason
        super().__init__(f"checkpoint step {step} ({path}) is damaged: {reason}")


class ForeignCheckpoint(CifarJaxError):
    """A checkpoint written by a run of another config (other shapes or training keys)."""

    def __init__(self, step: int, path: pathlib.Path, message: str, reason: str):
        self.step, self.path, self.reason = step, path, reason
        super().__init__(message)


def tree_paths(tree, is_leaf=None) -> list:
    """[(path as "a/b/0", leaf)] of `tree`, sorted by path."""
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]
    return sorted(((jax.tree_util.keystr(path, simple=True, separator="/"), leaf) for path, leaf in leaves),
                  key=lambda pair: pair[0])


def digest(tree) -> str:
    """SHA-256 over every array of `tree` (path, dtype, shape, bytes), in path order.

    Orbax stores uncompressed arrays without checksums: garbage of the right size would
    restore silently as wrong weights. The digests saved in the meta item catch that.
    """
    hasher = hashlib.sha256()
    for name, leaf in tree_paths(hosts.fetch(tree)):
        array = np.ascontiguousarray(leaf)
        hasher.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        hasher.update(array.reshape(-1).view(np.uint8))
    return hasher.hexdigest()


_quieted = False  # whether quiet_abandoned_io has put its filters in place


def _from_orbax(error: BaseException | None) -> bool:
    """Whether `error`, or the error it was raised from, passed through Orbax's code."""
    while error is not None:
        tb = error.__traceback__
        while tb is not None:
            if f"{os.sep}orbax{os.sep}" in tb.tb_frame.f_code.co_filename:
                return True
            tb = tb.tb_next
        error = error.__cause__
    return False


def _abandoned_by_orbax(unraisable) -> bool:
    """An "Event loop is closed" error, or one that Orbax's abandoned reads raise as they
    are finalised."""
    error = unraisable.exc_value
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
        return True
    code = getattr(unraisable.object, "cr_code", None)
    return (code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename) or _from_orbax(error)


def _keep_asyncio_record(record) -> bool:
    """False for asyncio's reports of Orbax's abandoned tasks ("Task exception was never
    retrieved", "Task was destroyed but it is pending")."""
    error = record.exc_info[1] if record.exc_info else None
    return not (_from_orbax(error) or f"{os.sep}orbax{os.sep}" in record.getMessage())


def quiet_abandoned_io() -> None:
    """Keeps what a failed Orbax read or write abandons from printing tracebacks.

    Orbax runs a checkpoint's array reads (or writes) as tasks of a fresh event loop
    (orbax.checkpoint's asyncio_utils.run_sync); when one fails, it closes that loop with the
    others still in flight. TensorStore then completes them on its own threads, and each
    completion calls into the closed loop: Python prints "RuntimeError: Event loop is
    closed" tracebacks, the failing reads' own errors as their coroutines and tasks are
    finalised (asyncio logs "Task exception was never retrieved"), and "coroutine ... was
    never awaited" warnings, at whatever moment that happens: after our one-line error, or
    at exit. Called once that error is caught: collects the abandoned coroutines now, and
    from then on drops just those reports in this process (every other unraisable
    exception, warning and log record still goes where it went).
    """
    global _quieted
    if not _quieted:
        _quieted = True
        warnings.filterwarnings("ignore", message=r"coroutine '.*' was never awaited", category=RuntimeWarning,
                                module=r".*orbax")
        previous = sys.unraisablehook
        sys.unraisablehook = lambda unraisable: None if _abandoned_by_orbax(unraisable) else previous(unraisable)
        logging.getLogger("asyncio").addFilter(_keep_asyncio_record)
    hook = sys.unraisablehook
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sys.unraisablehook = lambda unraisable: None
        try:
            gc.collect()
        finally:
            sys.unraisablehook = hook
