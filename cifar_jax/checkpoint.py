"""Checkpoints of a training run, with Orbax's CheckpointManager, under WORKDIR/checkpoints.

One checkpoint per saved epoch, in a folder named by the global train step
(`WORKDIR/checkpoints/<step>/`), holding four Orbax items:

- `params`: the model parameters, float32, uncompressed (so its size on disk is the
  model's float32 size, comparable to a PyTorch state_dict);
- `batch_stats`: BatchNorm running statistics;
- `train`: the optimizer state (Adam moments and the injected one-cycle schedule state),
  the step, and the key data of the run's RNG keys (e.g. augmentation and data order);
- `meta`: JSON: epoch, step, the epoch's metrics, the data-order state, the RNG keys'
  implementations, steps per epoch and the class names.

Policy (`config.checkpoint_every_epochs`, `config.keep_checkpoints`): save after every
N-th epoch and after the last one; keep the newest `keep_checkpoints` plus the one with
the best `test_acc` (Orbax's LatestN + BestN preservation policies). Orbax writes each
checkpoint into `<step>.orbax-checkpoint-tmp-*` and renames it when complete, so an
interrupted save leaves only a temporary folder, which is never listed as a checkpoint
and is deleted the next time a run opens the folder for writing.

The training loop uses `open_manager`, `save`, `restore_latest_for_resume` and `close`.
Users restoring a finished run call `restore(workdir, ...)`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import pathlib
import shutil
import threading
import warnings
from typing import Any, Mapping, Optional, Sequence

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from cifar_jax.data.pixels import IMAGE_SIZE
from cifar_jax.config import training_changes
from cifar_jax.errors import CifarJaxError, ConfigError

CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "checkpoints_damaged"  # damaged checkpoints are moved here when a run resumes
FOREIGN_DIR = "checkpoints_other_config"  # and checkpoints of runs with another config here
CONFIG_FILE = "config.json"  # written by cifar_jax.train
FORMAT_VERSION = 1
ARRAY_ITEMS = ("params", "batch_stats", "train")
META_ITEM = "meta"
BEST_METRIC = "test_acc"
# Config keys that runs older than the checkpoints may lack, with their defaults.
CHECKPOINT_CONFIG_DEFAULTS = {"checkpoint_every_epochs": 1, "keep_checkpoints": 3}


class CheckpointWriteError(CifarJaxError, OSError):
    """A checkpoint could not be written (disk full, read-only or vanished folder, ...)."""


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped (damaged) while resuming."""


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


@dataclasses.dataclass
class RunCheckpoints:
    """The Orbax manager of one run's checkpoint folder, and the policy it applies."""

    manager: ocp.CheckpointManager
    directory: pathlib.Path
    every_epochs: int
    keep: int
    num_epochs: int
    seed: int
    config: dict  # the run's config as JSON values, saved in every checkpoint's meta
    # The save handed to Orbax on a helper thread, and what it raised (re-raised later).
    _worker: Optional[threading.Thread] = dataclasses.field(default=None, repr=False)
    _error: Optional[BaseException] = dataclasses.field(default=None, repr=False)
    _failed_step: Optional[int] = dataclasses.field(default=None, repr=False)
    _pending_step: Optional[int] = dataclasses.field(default=None, repr=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        close(self)


@dataclasses.dataclass(frozen=True)
class Resume:
    """What `restore_latest_for_resume` found: continue the loop at `next_epoch`."""

    state: Any  # TrainState, like the template
    rngs: dict  # the keys passed to `save`, by name, as saved (typed or raw uint32)
    next_epoch: int
    step: int
    data_order: dict  # as passed to `save` (default: {"seed": ..., "next_epoch": ...})
    metrics: dict  # the saved epoch's metrics


# ----------------------------------------------------------------------------- config


def checkpoint_settings(config) -> tuple[int, int]:
    """(checkpoint_every_epochs, keep_checkpoints) from `config`, checked."""
    every = config.get("checkpoint_every_epochs", CHECKPOINT_CONFIG_DEFAULTS["checkpoint_every_epochs"])
    keep = config.get("keep_checkpoints", CHECKPOINT_CONFIG_DEFAULTS["keep_checkpoints"])
    for key, value in (("checkpoint_every_epochs", every), ("keep_checkpoints", keep)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key}={value!r} must be a positive integer; set --config.{key}")
    return every, keep


def _tuples(value):
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def load_run_config(workdir) -> ml_collections.ConfigDict:
    """The config a run saved as WORKDIR/config.json (lists read back as tuples)."""
    path = pathlib.Path(workdir)
    if not path.is_dir():
        raise CifarJaxError(f"workdir {workdir} does not exist; pass the --workdir of a training run")
    file = path / CONFIG_FILE
    if not file.is_file():
        raise CifarJaxError(f"{file} is missing; pass the --workdir of a cifar_jax.train run")
    try:
        values = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CifarJaxError(f"{file} is not readable JSON ({_one_line(error)}); restore it from the run")
    if not isinstance(values, dict):
        raise CifarJaxError(f"{file} does not hold a config object; restore it from the run")
    for key, default in CHECKPOINT_CONFIG_DEFAULTS.items():
        values.setdefault(key, default)
    return ml_collections.ConfigDict(_tuples(values))


# ----------------------------------------------------------------------------- manager


def _best_metric(metrics) -> float:
    value = (metrics or {}).get(BEST_METRIC)
    return float(value) if isinstance(value, (int, float)) and not math.isnan(value) else -math.inf


def _item_handlers() -> dict:
    # use_compression=False: plain float32, so the params item's size is the model's
    # float32 size (Orbax's default zstd saves ~9 % on the default model's weights).
    handlers = {name: ocp.PyTreeCheckpointHandler(use_compression=False) for name in ARRAY_ITEMS}
    handlers[META_ITEM] = ocp.JsonCheckpointHandler()
    return handlers


def _manager(directory: pathlib.Path, keep: int, read_only: bool) -> ocp.CheckpointManager:
    policies = ocp.checkpoint_managers
    options = ocp.CheckpointManagerOptions(
        # best_fn makes Orbax write each checkpoint's metrics (BestN needs them after a
        # restart) and gives best_step(); the preservation policy decides what is kept.
        best_fn=_best_metric,
        best_mode="max",
        preservation_policy=None if read_only else policies.AnyPreservationPolicy([
            policies.LatestN(n=keep),
            policies.BestN(get_metric_fn=_best_metric, reverse=False, n=1,
                           keep_checkpoints_without_metrics=False),
        ]),
        cleanup_tmp_directories=not read_only,
        create=not read_only,
        read_only=read_only,
        save_interval_steps=0 if read_only else 1,  # `save` below decides when to save
        enable_async_checkpointing=not read_only,
    )
    return ocp.CheckpointManager(directory, options=options, item_handlers=_item_handlers())


def open_manager(workdir, config) -> RunCheckpoints:
    """Opens (creating it) WORKDIR/checkpoints for a training run that writes checkpoints.

    Deletes leftovers of interrupted saves (`*.orbax-checkpoint-tmp-*`). Call `close`
    (or use it as a context manager) when training ends: saves run in the background.
    """
    every, keep = checkpoint_settings(config)
    directory = pathlib.Path(workdir).absolute() / CHECKPOINT_DIR
    return RunCheckpoints(_manager(directory, keep, read_only=False), directory, every, keep,
                          int(config.num_epochs), int(config.seed), json.loads(config.to_json()))


def _open_reader(workdir, config) -> ocp.CheckpointManager:
    directory = pathlib.Path(workdir).absolute() / CHECKPOINT_DIR
    if not directory.is_dir():
        raise CifarJaxError(
            f"no checkpoints in {workdir} (no {CHECKPOINT_DIR}/ folder); train with "
            f"python -m cifar_jax.train --workdir {workdir} first"
        )
    return _manager(directory, checkpoint_settings(config)[1], read_only=True)


def should_save(checkpoints: RunCheckpoints, epoch: int) -> bool:
    """After every `checkpoint_every_epochs`-th epoch (0-based `epoch`), and after the last."""
    return (epoch + 1) % checkpoints.every_epochs == 0 or epoch + 1 >= checkpoints.num_epochs


def _key_data(rng) -> tuple[jax.Array, Optional[str]]:
    if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(rng), str(jax.random.key_impl(rng))
    return rng, None  # a raw uint32 key (jax.random.PRNGKey)


def _json_value(value):
    if isinstance(value, (np.generic, jax.Array)):
        value = value.item() if np.ndim(value) == 0 else np.asarray(value).tolist()
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


def save(
    checkpoints: RunCheckpoints,
    state,
    epoch: int,
    metrics: dict,
    *,
    rngs: Mapping[str, jax.Array],
    data_order: Optional[dict] = None,
    class_names: Optional[Sequence[str]] = None,
    steps_per_epoch: Optional[int] = None,
    force: bool = False,
) -> bool:
    """Saves `state` after 0-based `epoch` if the policy says so (or `force`); True if saved.

    metrics: the epoch's numbers (JSON-able; `test_acc` ranks the best checkpoint).
    rngs: the run's RNG keys by name, e.g. {"augment": key, "data": key} (typed
        `jax.random.key` or raw `PRNGKey`); stored as key data and returned as they were.
    data_order: JSON-able facts that fix the next epochs' data order besides the keys;
        default {"seed": config.seed, "next_epoch": epoch + 1}. Returned unchanged by
        `restore_latest_for_resume`.
    class_names: stored for `cifar_jax.predict`.
    steps_per_epoch: default state.step // (epoch + 1); needed to rebuild the schedule.

    The loop waits only for a device-side copy of the arrays to be queued: the copy is
    handed to Orbax on a helper thread, which writes it in the background (the state's
    own buffers may be donated to the next step at once). Call `wait` or `close` before
    reading the checkpoint; an error of a background save is raised by the next call.
    """
    if not (force or should_save(checkpoints, epoch)):
        return False
    _join(checkpoints)  # one save at a time: Orbax's manager is not thread-safe
    step = int(state.step)
    if step in checkpoints.manager.all_steps():
        return False
    if steps_per_epoch is None:
        steps_per_epoch = step // (epoch + 1) if step % (epoch + 1) == 0 else None
    if not rngs:
        raise ValueError("save() needs the run's RNG keys, e.g. rngs={'augment': key}")
    keys = {str(name): _key_data(key) for name, key in rngs.items()}
    metrics = _json_value(dict(metrics))
    meta = {
        "format": FORMAT_VERSION,
        "epoch": int(epoch),
        "next_epoch": int(epoch) + 1,
        "step": step,
        "steps_per_epoch": steps_per_epoch,
        "metrics": metrics,
        "data_order": _json_value(data_order if data_order is not None
                                  else {"seed": checkpoints.seed, "next_epoch": int(epoch) + 1}),
        "rng_impls": {name: impl for name, (_, impl) in keys.items()},
        "image_shape": [IMAGE_SIZE, IMAGE_SIZE, 3],
        "class_names": list(class_names) if class_names is not None else None,
        "config": checkpoints.config,
    }
    train = {"opt_state": state.opt_state, "step": state.step,
             "rngs": {name: data for name, (data, _) in keys.items()}}
    # Fresh device buffers (an asynchronous copy): donating the state cannot touch them.
    params, batch_stats, train = _copy((state.params, state.batch_stats, train))
    args = ocp.args.Composite(
        params=ocp.args.PyTreeSave(params),
        batch_stats=ocp.args.PyTreeSave(batch_stats),
        train=ocp.args.PyTreeSave(train),
        meta=ocp.args.JsonSave(meta),
    )
    numeric = {k: float(v) for k, v in metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}

    def hand_over():
        try:
            # Orbax stores uncompressed arrays without checksums: garbage of the right
            # size would restore silently as wrong weights. The digests catch that.
            meta["checksums"] = {name: _digest(tree) for name, tree in
                                 (("params", params), ("batch_stats", batch_stats), ("train", train))}
            checkpoints.manager.save(step, args=args, metrics=numeric, force=True)
        except BaseException as error:  # re-raised on the caller's thread by _join
            checkpoints._error = error
            checkpoints._failed_step = step

    checkpoints._pending_step = step
    checkpoints._worker = threading.Thread(target=hand_over, name=f"checkpoint-{step}", daemon=True)
    checkpoints._worker.start()
    return True


def _digest(tree) -> str:
    """SHA-256 over every array of `tree` (path, dtype, shape, bytes), in path order."""
    leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
    digest = hashlib.sha256()
    for name, leaf in sorted(((_path_name(path), leaf) for path, leaf in leaves), key=lambda x: x[0]):
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


@jax.jit
def _copy(tree):
    return jax.tree.map(lambda x: x.copy(), tree)


def _join(checkpoints: RunCheckpoints) -> None:
    if checkpoints._worker is not None:
        checkpoints._worker.join()
        checkpoints._worker = None
    if checkpoints._error is not None:
        error, checkpoints._error = checkpoints._error, None
        _raise_write_error(checkpoints, error, checkpoints._failed_step)


def wait(checkpoints: RunCheckpoints) -> None:
    """Blocks until the last save is on disk; raises what a background save raised
    (CheckpointWriteError, one line, when the disk refused the write)."""
    _join(checkpoints)
    try:
        checkpoints.manager.wait_until_finished()
    except Exception as error:
        _raise_write_error(checkpoints, error, checkpoints._pending_step)


_WRITE_FAILURES = ("No space left", "Read-only file system", "Permission denied", "Disk quota",
                   "File too large", "Input/output error", "RESOURCE_EXHAUSTED")


def _raise_write_error(checkpoints: RunCheckpoints, error: BaseException, step: Optional[int]):
    """Removes what the failed save of `step` left behind and raises CheckpointWriteError
    (for errors of the file system; anything else is re-raised unchanged)."""
    text = _one_line(error)
    if not isinstance(error, OSError) and not any(s in str(error) or s in text for s in _WRITE_FAILURES):
        raise error
    removed = []
    if step is not None:
        for leftover in checkpoints.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
            shutil.rmtree(leftover, ignore_errors=True)
            removed.append(leftover.name)
        folder = checkpoints.directory / str(step)
        if folder.is_dir() and not (folder / META_ITEM).is_dir():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    try:
        kept = sorted(int(p.name) for p in checkpoints.directory.iterdir() if p.name.isdigit())
    except OSError:
        kept = []
    raise CheckpointWriteError(
        f"could not write checkpoint step {step} to {checkpoints.directory} ({text}); "
        f"{'removed the partial write; ' if removed else ''}"
        f"earlier checkpoints are untouched ({', '.join(map(str, kept)) or 'none'}); "
        "free disk space or pass a writable --workdir, then rerun to resume"
    ) from None


def close(checkpoints: RunCheckpoints) -> None:
    """Waits for the last save and releases the manager."""
    try:
        wait(checkpoints)
    finally:
        checkpoints.manager.close()


# ----------------------------------------------------------------------------- restoring


def _one_line(error: BaseException, limit: int = 240) -> str:
    """The innermost cause of `error` as `Type: first line`, without TensorStore specs."""
    seen = set()
    while id(error) not in seen and (error.__cause__ or error.__context__) is not None:
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    lines = str(error).strip().splitlines()
    text = " ".join(lines[0].split()) if lines else ""
    text = text.split(" [tensorstore_spec=")[0].split(" See full TensorStore details")[0]
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _path_name(path) -> str:
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
    return {_path_name(path): tuple(leaf.shape) for path, leaf in leaves}


def _check_shapes(item: str, saved, expected, step: int, where: str, folder: pathlib.Path) -> None:
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


def _check_config(meta: dict, expected: dict, step: int, folder: pathlib.Path) -> None:
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


def _abstract(tree):
    """ShapeDtypeStructs (with shardings: Orbax restores onto them) for a tree of arrays."""
    default = jax.sharding.SingleDeviceSharding(jax.devices()[0])

    def one(x):
        sharding = getattr(x, "sharding", None)
        if not isinstance(sharding, jax.sharding.Sharding):
            sharding = default
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

    return jax.tree.map(one, tree)


def _restore_args(target) -> ocp.args.PyTreeRestore:
    return ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target)
    )


def _read_meta(manager: ocp.CheckpointManager, step: int) -> dict:
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
        raise DamagedCheckpoint(step, folder, f"meta item unreadable ({_one_line(error)})")
    required = ("format", "epoch", "step", "metrics", "data_order")
    if not isinstance(meta, dict) or any(key not in meta for key in required):
        raise DamagedCheckpoint(step, folder, "meta item lacks epoch/step/metrics/data_order")
    if meta["format"] != FORMAT_VERSION:
        raise CifarJaxError(f"checkpoint step {step} has format {meta['format']}, this cifar_jax "
                            f"reads format {FORMAT_VERSION}; use the cifar_jax version that wrote it")
    return meta


def _saved_trees(manager: ocp.CheckpointManager, step: int) -> dict:
    folder = pathlib.Path(manager.directory) / str(step)
    try:
        metadata = manager.item_metadata(step)
        trees = {item: getattr(metadata[item], "tree", metadata[item]) for item in ARRAY_ITEMS}
    except Exception as error:
        raise DamagedCheckpoint(step, folder, f"metadata unreadable ({_one_line(error)})")
    for item, tree in trees.items():
        if tree is None:
            raise DamagedCheckpoint(step, folder, f"no readable metadata for item {item!r}")
    return trees


def _restore_step(manager, step: int, targets: dict, where: str,
                  config: Optional[dict] = None) -> tuple[dict, dict]:
    """(restored items, meta) of `step`, each array item shaped like `targets[item]`.

    ForeignCheckpoint if shapes differ from the targets, or if `config` (JSON values) is
    given and differs from the one the checkpoint records; DamagedCheckpoint if unreadable.
    """
    folder = pathlib.Path(manager.directory) / str(step)
    meta = _read_meta(manager, step)
    saved = _saved_trees(manager, step)
    for item in ("params", "batch_stats"):
        if item in targets:
            _check_shapes(item, saved[item], targets[item], step, where, folder)
    if config is not None:
        _check_config(meta, config, step, folder)
    if "train" in targets:  # key data: shapes as saved (they depend on the RNG impl)
        try:
            saved_rngs = dict(saved["train"]["rngs"])
        except (KeyError, TypeError):
            raise DamagedCheckpoint(step, pathlib.Path(manager.directory) / str(step),
                                    "train item has no rngs") from None
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        targets["train"]["rngs"] = {
            name: jax.ShapeDtypeStruct(tuple(md.shape), np.uint32, sharding=device)
            for name, md in saved_rngs.items()
        }
    args = {item: _restore_args(_abstract(target)) for item, target in targets.items()}
    try:
        restored = manager.restore(step, args=ocp.args.Composite(**args))
    except Exception as error:  # truncated or deleted array files, broken manifests, ...
        raise DamagedCheckpoint(step, folder, _one_line(error))
    checksums = meta.get("checksums") or {}  # absent in checkpoints of older versions
    for item in targets:
        if item in checksums and _digest(restored[item]) != checksums[item]:
            raise DamagedCheckpoint(step, folder, f"the {item} arrays do not match the checksum saved "
                                                  "with them (their files were altered or corrupted)")
    return {item: restored[item] for item in targets}, meta


def _state_targets(template) -> dict:
    return {
        "params": template.params,
        "batch_stats": template.batch_stats,
        "train": {"opt_state": template.opt_state, "step": template.step, "rngs": None},
    }


def _with_restored(template, items: dict):
    train = items["train"]
    return template.replace(
        params=items["params"], batch_stats=items["batch_stats"],
        opt_state=train["opt_state"], step=train["step"],
    )


def _wrap_rng(data, impl: Optional[str]):
    return jax.random.wrap_key_data(data, impl=impl) if impl else data


def restore_latest_for_resume(checkpoints: RunCheckpoints, template_state) -> Optional[Resume]:
    """The newest usable checkpoint, restored onto `template_state`, or None if none exist.

    `template_state` is the loop's freshly created TrainState (same config): it gives the
    tree structure, shapes, shardings and the optimizer. Newer checkpoints that are damaged,
    or were written by a run of another config (other shapes, or another config recorded
    in their meta), are skipped with a CheckpointWarning naming the step and why, and moved
    to WORKDIR/checkpoints_damaged or WORKDIR/checkpoints_other_config, so that the steps
    they held can be saved again. When no checkpoint is usable, nothing is moved and
    CifarJaxError says why (for checkpoints all of another config: the config changed).
    """
    manager = checkpoints.manager
    wait(checkpoints)
    manager.reload()
    steps = sorted(manager.all_steps(), reverse=True)
    skipped: list = []  # DamagedCheckpoint or ForeignCheckpoint, newest first
    for step in steps:
        try:
            items, meta = _restore_step(manager, step, _state_targets(template_state),
                                        "the config of this run", checkpoints.config)
        except (DamagedCheckpoint, ForeignCheckpoint) as error:
            skipped.append(error)
            continue
        for bad in skipped:
            damaged = isinstance(bad, DamagedCheckpoint)
            target = _move_aside(checkpoints.directory, bad.step, DAMAGED_DIR if damaged else FOREIGN_DIR)
            warnings.warn(
                f"skipping {'damaged ' if damaged else ''}checkpoint step {bad.step} ({bad.reason}); "
                f"moved it to {target}; resuming from step {step}",
                CheckpointWarning,
                stacklevel=2,
            )
        if skipped:
            manager.reload()
        return Resume(
            state=_with_restored(template_state, items),
            rngs={name: _wrap_rng(data, (meta.get("rng_impls") or {}).get(name))
                  for name, data in items["train"]["rngs"].items()},
            next_epoch=int(meta["epoch"]) + 1,
            step=int(meta["step"]),
            data_order=meta["data_order"],
            metrics=meta["metrics"],
        )
    if skipped and all(isinstance(bad, ForeignCheckpoint) for bad in skipped):
        raise skipped[0]  # every checkpoint disagrees: the config changed, nothing is damaged
    if skipped:
        all_damaged = all(isinstance(bad, DamagedCheckpoint) for bad in skipped)
        reasons = "; ".join(f"step {bad.step}: "
                            f"{'damaged, ' if isinstance(bad, DamagedCheckpoint) and not all_damaged else ''}"
                            f"{bad.reason}" for bad in skipped)
        raise CifarJaxError(
            f"{'every checkpoint in' if all_damaged else 'no usable checkpoint in'} {checkpoints.directory} "
            f"{'is damaged ' if all_damaged else ''}({reasons}); "
            f"delete that folder to train from scratch, or use a new --workdir"
        )
    return None


def _move_aside(directory: pathlib.Path, step: int, folder_name: str) -> pathlib.Path:
    aside = directory.parent / folder_name
    aside.mkdir(exist_ok=True)
    target = aside / str(step)
    suffix = 1
    while target.exists():
        target = aside / f"{step}-{suffix}"
        suffix += 1
    shutil.move(str(directory / str(step)), str(target))
    return target


def _select_step(manager, workdir, step: Optional[int], best: bool) -> int:
    steps = sorted(manager.all_steps())
    if not steps:
        raise CifarJaxError(
            f"no checkpoints in {workdir}; train with python -m cifar_jax.train --workdir {workdir} first"
        )
    if step is not None and best:
        raise CifarJaxError("pass either a step or best, not both")
    if best:
        chosen = manager.best_step()
        if chosen is None:
            raise CifarJaxError(f"no checkpoint in {workdir} records {BEST_METRIC}; pass --step instead")
        return chosen
    if step is None:
        return steps[-1]
    if step not in steps:
        raise CifarJaxError(
            f"no checkpoint at step {step} in {workdir}; available steps: "
            f"{', '.join(map(str, steps))}"
        )
    return step


def available_steps(workdir) -> list[int]:
    """The steps of the complete checkpoints in WORKDIR/checkpoints (oldest first)."""
    config = load_run_config(workdir)
    manager = _open_reader(workdir, config)
    try:
        return sorted(manager.all_steps())
    finally:
        manager.close()


def checkpoint_info(workdir, step: Optional[int] = None, best: bool = False) -> dict:
    """Facts about one checkpoint (default: the latest) without restoring its arrays:
    step, epoch, metrics, data_order, class_names, path, and param_bytes: the bytes of
    the files Orbax wrote for the `params` item (the size on disk of the parameters)."""
    config = load_run_config(workdir)
    manager = _open_reader(workdir, config)
    try:
        step = _select_step(manager, workdir, step, best)
        meta = _read_meta(manager, step)
    except DamagedCheckpoint as error:
        raise _refusal(error, manager, workdir) from None
    finally:
        manager.close()
    folder = pathlib.Path(manager.directory) / str(step)
    return {
        "step": step,
        "epoch": meta["epoch"],
        "metrics": meta["metrics"],
        "data_order": meta["data_order"],
        "class_names": meta.get("class_names"),
        "steps_per_epoch": meta.get("steps_per_epoch"),
        "path": str(folder),
        "param_bytes": directory_bytes(folder / "params"),
    }


def directory_bytes(path) -> int:
    """Sum of the sizes of the files under `path` (what Orbax wrote; not disk blocks)."""
    return sum(f.stat().st_size for f in pathlib.Path(path).rglob("*") if f.is_file())


def _refusal(error: DamagedCheckpoint, manager, workdir) -> CifarJaxError:
    others = [s for s in sorted(manager.all_steps()) if s != error.step]
    hint = (f"pass --step with another one ({', '.join(map(str, others))})" if others
            else "no other checkpoint is left; retrain")
    return CifarJaxError(f"{error}; {hint}")


def abstract_train_state(config, steps_per_epoch: int):
    """The TrainState `create_train_state` would build, as shapes only (nothing computed)."""
    from cifar_jax.steps import create_train_state

    image_shape = (IMAGE_SIZE, IMAGE_SIZE, 3)
    return jax.eval_shape(
        lambda: create_train_state(jax.random.key(0), config, steps_per_epoch, image_shape)
    )


def restore(workdir, step: Optional[int] = None, best: bool = False, *, variables_only: bool = False):
    """Restores a checkpoint of the run in `workdir` with the config that run saved.

    Returns `(state, config)`: `state` is the TrainState (params, batch_stats, opt_state
    with the one-cycle schedule's state, step; `state.tx` continues the run's schedule),
    ready for `cifar_jax.train_step`; with `variables_only=True` it is instead the dict
    `{"params": ..., "batch_stats": ...}` for `create_model(config).apply` (the optimizer
    state is not read). `config` is the run's `config.json` as a ConfigDict.

    step: a train step that has a checkpoint (default: the latest); best=True: the
    checkpoint with the highest test accuracy. Raises CifarJaxError (one line) when the
    workdir has no checkpoints, the step does not exist, the checkpoint is damaged, or
    its shapes do not match the config (naming the parameter and both shapes).
    `checkpoint_info` gives the checkpoint's step, epoch, metrics and RNG/data-order state.
    """
    config = load_run_config(workdir)
    manager = _open_reader(workdir, config)
    try:
        step = _select_step(manager, workdir, step, best)
        try:
            meta = _read_meta(manager, step)
            steps_per_epoch = meta.get("steps_per_epoch") or 1
            template = abstract_train_state(config, steps_per_epoch)
            targets = _state_targets(template)
            if variables_only:
                del targets["train"]
            items, _ = _restore_step(manager, step, targets,
                                     f"the config in {pathlib.Path(workdir) / CONFIG_FILE}")
        except DamagedCheckpoint as error:
            raise _refusal(error, manager, workdir) from None
    finally:
        manager.close()
    if variables_only:
        return {"params": items["params"], "batch_stats": items["batch_stats"]}, config
    return _with_restored(template, items), config
