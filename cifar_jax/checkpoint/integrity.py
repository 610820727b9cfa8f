"""Telling an intact checkpoint from a damaged or foreign one: SHA-256 digests of the
arrays, the meta item's required fields, and the shapes and config a checkpoint was
written with, compared with what the caller expects."""
from __future__ import annotations

import hashlib
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp

from cifar_jax import hosts
from cifar_jax.checkpoint.manager import ARRAY_ITEMS, FORMAT_VERSION, META_ITEM
from cifar_jax.config import training_changes
from cifar_jax.errors import CifarJaxError, one_line


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


def digest(tree) -> str:
    """SHA-256 over every array of `tree` (path, dtype, shape, bytes), in path order."""
    leaves = jax.tree_util.tree_flatten_with_path(hosts.fetch(tree))[0]
    hasher = hashlib.sha256()
    for name, leaf in sorted(((path_name(path), leaf) for path, leaf in leaves), key=lambda x: x[0]):
        array = np.ascontiguousarray(np.asarray(leaf))
        hasher.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        hasher.update(array.tobytes())
    return hasher.hexdigest()


def path_name(path) -> str:
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def _shapes(tree) -> dict[str, tuple]:
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
    return {path_name(path): tuple(leaf.shape) for path, leaf in leaves}


def check_shapes(item: str, saved, expected, step: int, where: str, folder: pathlib.Path) -> None:
    """ForeignCheckpoint naming the first parameter whose shape differs (or is missing)."""
    saved_shapes = {f"{item}/{k}": v for k, v in _shapes(saved).items()}
    expected_shapes = {f"{item}/{k}": v for k, v in _shapes(expected).items()}

    def foreign(message, reason):
        return ForeignCheckpoint(step, folder, message, reason)

    for name, shape in expected_shapes.items():
        if name not in saved_shapes:
            raise foreign(
                f"checkpoint step {step} has no parameter {name}, which {where} expects "
                f"(shape {shape}); the checkpoint was written with a different model config",
                f"it has no parameter {name}",
            )
        if saved_shapes[name] != shape:
            raise foreign(
                f"checkpoint step {step} does not match {where}: {name} has shape "
                f"{saved_shapes[name]} in the checkpoint but {shape} from the config; "
                f"use the config the run was trained with",
                f"{name} has shape {saved_shapes[name]}, not {shape}",
            )
    extra = sorted(set(saved_shapes) - set(expected_shapes))
    if extra:
        raise foreign(
            f"checkpoint step {step} has parameter {extra[0]} (shape {saved_shapes[extra[0]]}), "
            f"which {where} does not have; use the config the run was trained with",
            f"it has parameter {extra[0]}, which this model lacks",
        )


def check_config(meta: dict, expected: dict, step: int, folder: pathlib.Path) -> None:
    """ForeignCheckpoint if the checkpoint records a config that trains differently."""
    saved = meta.get("config")  # absent in checkpoints of older versions
    if isinstance(saved, dict):
        changed = training_changes(saved, expected)
        if changed:
            shown = ", ".join(f"{k}={saved.get(k)!r}" for k in changed[:4])
            raise ForeignCheckpoint(
                step, folder,
                f"checkpoint step {step} was written by a run with another config ({shown}); "
                "use the config the run was trained with",
                f"written with another config: {shown}",
            )


def read_meta(manager: ocp.CheckpointManager, step: int) -> dict:
    """The step's `meta` item, checked; DamagedCheckpoint if a piece is missing."""
    folder = pathlib.Path(manager.directory) / str(step)
    for item in ARRAY_ITEMS + (META_ITEM,):
        if not (folder / item).is_dir():
            raise DamagedCheckpoint(step, folder, f"item {item!r} is missing (no {item}/ folder)")
    for item in ARRAY_ITEMS:
        if not (folder / item / "_METADATA").is_file():
            raise DamagedCheckpoint(step, folder, f"{item}/_METADATA is missing")
    try:
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[META_ITEM]
    except Exception as error:  # Orbax/JSON errors vary by version: all mean unreadable
        raise DamagedCheckpoint(step, folder, f"meta item unreadable ({one_line(error)})")
    required = ("format", "epoch", "step", "metrics", "data_order")
    if not isinstance(meta, dict) or any(key not in meta for key in required):
        raise DamagedCheckpoint(step, folder, "meta item lacks epoch/step/metrics/data_order")
    if meta["format"] != FORMAT_VERSION:
        raise CifarJaxError(f"checkpoint step {step} has format {meta['format']}, this cifar_jax "
                            f"reads format {FORMAT_VERSION}; use the cifar_jax version that wrote it")
    return meta


def saved_trees(manager: ocp.CheckpointManager, step: int) -> dict:
    folder = pathlib.Path(manager.directory) / str(step)
    try:
        metadata = manager.item_metadata(step)
        trees = {item: getattr(metadata[item], "tree", metadata[item]) for item in ARRAY_ITEMS}
    except Exception as error:
        raise DamagedCheckpoint(step, folder, f"metadata unreadable ({one_line(error)})")
    for item, tree in trees.items():
        if tree is None:
            raise DamagedCheckpoint(step, folder, f"no readable metadata for item {item!r}")
    return trees
