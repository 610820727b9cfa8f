"""Reading checkpoints back: the newest usable one when a run resumes (skipping damaged
and foreign ones), and any chosen one of a finished run for evaluation or inference.

A checkpoint is damaged when a piece is missing or unreadable, or when its arrays do not
match the SHA-256 digests saved with them; it is foreign when its shapes, or the config
recorded in its meta, differ from what the caller expects."""
from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import shutil
import warnings
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from cifar_jax import hosts
from cifar_jax.checkpoint.layout import (ARRAY_ITEMS, BEST_METRIC, CONFIG_FILE, DAMAGED_DIR, FOREIGN_DIR,
                                         FORMAT_VERSION, META_ITEM, RENAMED_MODELS, CheckpointWarning,
                                         DamagedCheckpoint, ForeignCheckpoint, quiet_abandoned_io, digest,
                                         tree_paths)
from cifar_jax.checkpoint.manager import (MetaRestore, RunCheckpoints, load_run_config, open_reader, train_first,
                                          wait)
from cifar_jax.config import training_changes
from cifar_jax.data.pixels import IMAGE_SIZE
from cifar_jax.errors import CifarJaxError, one_line


@dataclasses.dataclass(frozen=True)
class Resume:
    """What `restore_latest_for_resume` found: continue the loop at `next_epoch`."""

    state: Any  # TrainState, like the template
    rngs: dict  # the keys passed to `save`, by name, as saved (typed or raw uint32)
    next_epoch: int
    step: int
    data_order: dict  # as passed to `save` (default: {"seed": ..., "next_epoch": ...})
    metrics: dict  # the saved epoch's metrics


def _read_meta(manager, step: int) -> dict:
    """The step's `meta` item, checked against its schema (meta_problem); DamagedCheckpoint
    if a piece is missing or the meta is not what `save` writes."""
    folder = pathlib.Path(manager.directory) / str(step)
    for piece in [*ARRAY_ITEMS, META_ITEM, *(f"{item}/_METADATA" for item in ARRAY_ITEMS)]:
        if not (folder / piece).exists():
            raise DamagedCheckpoint(step, folder, f"{piece} is missing")
    try:
        meta = manager.restore(step, args=ocp.args.Composite(**{META_ITEM: MetaRestore()}))[META_ITEM]
    except Exception as error:  # Orbax/JSON errors vary by version: all mean unreadable
        raise DamagedCheckpoint(step, folder, f"meta item unreadable ({one_line(error)})") from None
    if isinstance(meta, dict) and meta.get("format", FORMAT_VERSION) != FORMAT_VERSION and _is_int(meta["format"]):
        raise CifarJaxError(f"checkpoint step {step} has format {meta['format']}, this cifar_jax "
                            f"reads format {FORMAT_VERSION}; use the cifar_jax version that wrote it")
    problem = meta_problem(meta)
    if problem is not None:
        raise DamagedCheckpoint(step, folder, f"its meta item {problem}")
    return meta


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_SHA256 = re.compile(r"[0-9a-f]{64}")
# key -> (check, what it must be); the keys `save` always writes. steps_per_epoch, class_names
# and config may be null (unknown, or absent in checkpoints of older versions).
_META_SCHEMA = {
    "format": (_is_int, "an integer"),
    "epoch": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "step": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "metrics": (lambda v: isinstance(v, dict), "an object"),
    "data_order": (lambda v: isinstance(v, dict), "an object"),
    "checksums": (lambda v: isinstance(v, dict) and all(isinstance(v.get(item), str) and _SHA256.fullmatch(v[item])
                                                         for item in ARRAY_ITEMS),
                  f"SHA-256 digests of {', '.join(ARRAY_ITEMS)}"),
}
_OPTIONAL_META = {
    "next_epoch": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "steps_per_epoch": (lambda v: v is None or (_is_int(v) and v >= 1), "null or an integer >= 1"),
    "rng_impls": (lambda v: isinstance(v, dict) and all(x is None or isinstance(x, str) for x in v.values()),
                  "an object of PRNG implementation names"),
    "image_shape": (lambda v: isinstance(v, list) and all(_is_int(x) and x > 0 for x in v), "a list of sizes"),
    "class_names": (lambda v: v is None or (isinstance(v, list) and all(isinstance(x, str) for x in v)),
                    "null or a list of names"),
    "config": (lambda v: v is None or isinstance(v, dict), "null or an object"),
    "layer_names": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
}


def meta_problem(meta) -> Optional[str]:
    """What is wrong with a checkpoint's meta item (as "has epoch null, not an integer >= 0"),
    or None if it has every key `save` writes, with values of the right types. Every
    checkpoint of this format has checksums: one without them is damaged, not exempt."""
    if not isinstance(meta, dict):
        return f"is a {type(meta).__name__}, not an object"
    for key, (check, wanted) in _META_SCHEMA.items():
        if key not in meta:
            return f"lacks {key}"
        if not check(meta[key]):
            return f"has {key} {_shown(meta[key])}, not {wanted}"
    for key, (check, wanted) in _OPTIONAL_META.items():
        if key in meta and not check(meta[key]):
            return f"has {key} {_shown(meta[key])}, not {wanted}"
    return None


def _shown(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_layer_names(step: int, folder: pathlib.Path, meta: dict, model: Optional[str]) -> None:
    """ForeignCheckpoint for a checkpoint of a zoo model whose layers cifar_jax 0.2.0 renamed,
    written before (its meta has no "layer_names"): its arrays would not fit the model's tree."""
    if model in RENAMED_MODELS and "layer_names" not in meta:
        raise ForeignCheckpoint(
            step, folder, f"checkpoint step {step} ({folder}) was written by cifar_jax 0.1.0 or earlier, whose "
            f"{model} had other layer names; evaluate it with that version (pip install cifar-jax==0.1.0), "
            "or retrain", "written by cifar_jax 0.1.0 or earlier, with other layer names")


def _shapes(item: str, tree) -> dict[str, tuple]:
    return {f"{item}/{name}": tuple(leaf.shape)
            for name, leaf in tree_paths(tree, is_leaf=lambda x: hasattr(x, "shape"))}


def _check_fits(manager, step: int, meta: dict, targets: dict, where: str, config: Optional[dict]) -> dict:
    """ForeignCheckpoint naming the first parameter whose shape differs from `targets`
    (or is missing on one side), or the keys whose values differ from `config`; returns
    the saved trees' metadata (shapes, dtypes) by item."""
    folder = pathlib.Path(manager.directory) / str(step)
    try:
        metadata = manager.item_metadata(step)
        saved = {item: getattr(metadata[item], "tree", metadata[item]) for item in ARRAY_ITEMS}
    except Exception as error:  # as in _read_meta
        raise DamagedCheckpoint(step, folder, f"metadata unreadable ({one_line(error)})") from None
    if any(tree is None for tree in saved.values()):
        raise DamagedCheckpoint(step, folder, "an item's metadata is unreadable")
    for item in ("params", "batch_stats"):
        if item not in targets:
            continue
        have, want = _shapes(item, saved[item]), _shapes(item, targets[item])
        for name in sorted(set(have) | set(want)):
            a, b = have.get(name, "missing"), want.get(name, "missing")
            if a != b:
                raise ForeignCheckpoint(
                    step, folder, f"checkpoint step {step} does not match {where}: {name} has shape {a} in the "
                    f"checkpoint but {b} from the config; use the config the run was trained with",
                    f"{name} has shape {a}, not {b}")
    recorded = meta.get("config")  # absent in checkpoints of older versions
    changed = training_changes(recorded, config) if isinstance(recorded, dict) and config else []
    if changed:
        shown = ", ".join(f"{k}={recorded.get(k)!r}" for k in changed[:4])
        raise ForeignCheckpoint(step, folder, f"checkpoint step {step} was written by a run with another "
                                f"config ({shown}); use the config the run was trained with",
                                f"written with another config: {shown}")
    return saved


def _abstract(tree):
    """ShapeDtypeStructs (with shardings: Orbax restores onto them) for a tree of arrays."""
    default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def one(x):
        sharding = getattr(x, "sharding", None)
        return jax.ShapeDtypeStruct(x.shape, x.dtype,
                                    sharding=sharding if isinstance(sharding, jax.sharding.Sharding) else default)

    return jax.tree.map(one, tree)


def _restore_step(manager, step: int, targets: dict, where: str, model: Optional[str],
                  config: Optional[dict] = None) -> tuple[dict, dict]:
    """(restored items, meta) of `step`, each array item shaped like `targets[item]`, for
    the registry's `model`.

    ForeignCheckpoint if the checkpoint's layer names are older than `model`'s, if shapes
    differ from the targets, or if `config` (JSON values) is given and differs from the one
    the checkpoint records; DamagedCheckpoint if unreadable or if the arrays do not match
    the digests saved with them.
    """
    folder = pathlib.Path(manager.directory) / str(step)
    meta = _read_meta(manager, step)
    _check_layer_names(step, folder, meta, model)
    saved = _check_fits(manager, step, meta, targets, where, config)
    if "train" in targets:  # key data: shapes as saved (they depend on the RNG impl)
        try:
            saved_rngs = dict(saved["train"]["rngs"])
        except (KeyError, TypeError):
            raise DamagedCheckpoint(step, folder, "train item has no rngs") from None
        targets["train"]["rngs"] = {name: jax.ShapeDtypeStruct(tuple(md.shape), np.uint32)
                                    for name, md in saved_rngs.items()}
    args = {}
    for item, target in targets.items():
        target = _abstract(target)
        args[item] = ocp.args.PyTreeRestore(item=target,
                                            restore_args=ocp.checkpoint_utils.construct_restore_args(target))
    problem = None
    try:
        restored = manager.restore(step, args=ocp.args.Composite(**args))
    except Exception as error:  # truncated or deleted array files, broken manifests, ...
        problem = one_line(error)
    if problem is not None:  # raised out here, not chained to Orbax's error (quiet_abandoned_io)
        quiet_abandoned_io()
        raise DamagedCheckpoint(step, folder, problem)
    for item in targets:  # _read_meta made sure that every item has its digest
        if digest(restored[item]) != meta["checksums"][item]:
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
    return template.replace(params=items["params"], batch_stats=items["batch_stats"],
                            opt_state=train["opt_state"], step=train["step"])


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
    skipped: list = []  # DamagedCheckpoint or ForeignCheckpoint, newest first
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            items, meta = _restore_step(manager, step, _state_targets(template_state), "the config of this run",
                                        checkpoints.config.get("model"), checkpoints.config)
            rngs = _typed_keys(manager, step, items["train"]["rngs"], meta.get("rng_impls") or {})
        except (DamagedCheckpoint, ForeignCheckpoint) as error:
            skipped.append(error)
            continue
        for bad in skipped if hosts.is_primary() else ():  # one process moves files
            damaged = isinstance(bad, DamagedCheckpoint)
            target = _move_aside(checkpoints.directory, bad.step, DAMAGED_DIR if damaged else FOREIGN_DIR)
            warnings.warn(f"skipping {'damaged ' if damaged else ''}checkpoint step {bad.step} ({bad.reason}); "
                          f"moved it to {target}; resuming from step {step}", CheckpointWarning, stacklevel=2)
        if skipped:
            hosts.sync("cifar_jax: skipped checkpoints moved aside")
            manager.reload()
        return Resume(_with_restored(template_state, items), rngs, meta["epoch"] + 1, meta["step"],
                      meta["data_order"], meta["metrics"])
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


def _typed_keys(manager, step: int, rngs: dict, impls: dict) -> dict:
    """The saved key data as typed keys of the PRNG implementation recorded for each (raw
    uint32 keys where none is); DamagedCheckpoint for an unknown name or a mismatched shape."""
    try:
        return {name: jax.random.wrap_key_data(data, impl=impls[name]) if impls.get(name) else data
                for name, data in rngs.items()}
    except (ValueError, TypeError, KeyError) as error:
        raise DamagedCheckpoint(step, pathlib.Path(manager.directory) / str(step),
                                f"its RNG keys do not fit the recorded implementations ({one_line(error)})") from None


def _move_aside(directory: pathlib.Path, step: int, folder_name: str) -> pathlib.Path:
    aside = directory.parent / folder_name
    aside.mkdir(exist_ok=True)
    target, suffix = aside / str(step), 1
    while target.exists():
        target, suffix = aside / f"{step}-{suffix}", suffix + 1
    shutil.move(str(directory / str(step)), str(target))
    return target


def _select_step(manager, workdir, step: Optional[int], best: bool) -> int:
    steps = sorted(manager.all_steps())
    if not steps:
        raise CifarJaxError(f"no checkpoints in {workdir}; {train_first(workdir)}")
    if step is not None and best:
        raise CifarJaxError("pass either a step or best, not both")
    if best:
        if manager.best_step() is None:
            raise CifarJaxError(f"no checkpoint in {workdir} records {BEST_METRIC}; pass --step instead")
        return manager.best_step()
    if step is not None and step not in steps:
        raise CifarJaxError(f"no checkpoint at step {step} in {workdir}; available steps: "
                            f"{', '.join(map(str, steps))}")
    return steps[-1] if step is None else step


def _refusal(error: DamagedCheckpoint, manager) -> CifarJaxError:
    others = [s for s in sorted(manager.all_steps()) if s != error.step]
    hint = (f"pass --step with another one ({', '.join(map(str, others))})" if others
            else "no other checkpoint is left; retrain")
    return CifarJaxError(f"{error}; {hint}")


def available_steps(workdir) -> list[int]:
    """The steps of the complete checkpoints in WORKDIR/checkpoints (oldest first)."""
    manager = open_reader(workdir, load_run_config(workdir))
    try:
        return sorted(manager.all_steps())
    finally:
        manager.close()


def checkpoint_info(workdir, step: Optional[int] = None, best: bool = False) -> dict:
    """Facts about one checkpoint (default: the latest) without restoring its arrays:
    step, epoch, metrics, data_order, class_names, path, and param_bytes: the bytes of
    the files Orbax wrote for the `params` item (the size on disk of the parameters)."""
    manager = open_reader(workdir, load_run_config(workdir))
    try:
        step = _select_step(manager, workdir, step, best)
        meta = _read_meta(manager, step)
    except DamagedCheckpoint as error:
        raise _refusal(error, manager) from None
    finally:
        manager.close()
    folder = pathlib.Path(manager.directory) / str(step)
    return {"step": step, **{key: meta.get(key) for key in ("epoch", "metrics", "data_order", "class_names",
                                                           "steps_per_epoch")},
            "path": str(folder), "param_bytes": directory_bytes(folder / "params")}


def directory_bytes(path) -> int:
    """Sum of the sizes of the files under `path` (what Orbax wrote; not disk blocks)."""
    return sum(f.stat().st_size for f in pathlib.Path(path).rglob("*") if f.is_file())


def abstract_train_state(config, steps_per_epoch: int):
    """The TrainState `create_train_state` would build, as shapes only (nothing computed)."""
    from cifar_jax.steps import create_train_state  # steps imports the models: only when needed

    image_shape = (IMAGE_SIZE, IMAGE_SIZE, 3)
    return jax.eval_shape(
        # pretrained=False: the shapes are the same, and no weight file is read for them.
        lambda: create_train_state(jax.random.key(0), config, steps_per_epoch, image_shape, pretrained=False)
    )


def restore(workdir, step: Optional[int] = None, best: bool = False, *, variables_only: bool = False):
    """Restores a checkpoint of the run in `workdir` with the config that run saved.

    Args:
      workdir: the `--workdir` of a `cifar_jax.train` run (it holds `config.json` and
        `checkpoints/`).
      step: a train step that has a checkpoint; default: the latest.
      best: restore the checkpoint with the highest test accuracy instead (not with `step`).
      variables_only: read only the model's variables, not the optimizer state.

    Returns:
      `(state, config)`. `state` is the TrainState (params, batch_stats, opt_state with
      the one-cycle schedule's state, step; `state.tx` continues the run's schedule), ready
      for `cifar_jax.train_step`; with `variables_only=True` it is instead the dict
      `{"params": ..., "batch_stats": ...}` for `create_model(config).apply`. `config` is
      the run's `config.json` as a ConfigDict.

    Raises CifarJaxError (one line) when the workdir has no checkpoints, the step does not
    exist, the checkpoint is damaged, or its shapes do not match the config (naming the
    parameter and both shapes). `checkpoint_info` gives the checkpoint's step, epoch,
    metrics and RNG/data-order state.
    """
    config = load_run_config(workdir)
    manager = open_reader(workdir, config)
    try:
        step = _select_step(manager, workdir, step, best)
        meta = _read_meta(manager, step)
        template = abstract_train_state(config, meta.get("steps_per_epoch") or 1)
        targets = _state_targets(template)
        if variables_only:
            del targets["train"]
        items, _ = _restore_step(manager, step, targets, f"the config in {pathlib.Path(workdir) / CONFIG_FILE}",
                                 config.model)
    except DamagedCheckpoint as error:
        raise _refusal(error, manager) from None
    finally:
        manager.close()
    if variables_only:
        return {"params": items["params"], "batch_stats": items["batch_stats"]}, config
    return _with_restored(template, items), config
