"""Saving a train state as a checkpoint without stalling the loop: a device-side copy,
handed to Orbax on a helper thread; write errors come back as one line."""
from __future__ import annotations

import shutil
import threading
from typing import Mapping, Optional, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp

from cifar_jax import hosts
from cifar_jax.checkpoint.integrity import digest
from cifar_jax.checkpoint.manager import FORMAT_VERSION, META_ITEM, RunCheckpoints, should_save
from cifar_jax.data.pixels import IMAGE_SIZE
from cifar_jax.errors import CifarJaxError, one_line


class CheckpointWriteError(CifarJaxError, OSError):
    """A checkpoint could not be written (disk full, read-only or vanished folder, ...)."""


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
    step = int(hosts.local_value(state.step))
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
    params, batch_stats, train = device_copy((state.params, state.batch_stats, train))
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
            meta["checksums"] = {name: digest(tree) for name, tree in
                                 (("params", params), ("batch_stats", batch_stats), ("train", train))}
            checkpoints.manager.save(step, args=args, metrics=numeric, force=True)
        except BaseException as error:  # re-raised on the caller's thread by _join
            checkpoints._error = error
            checkpoints._failed_step = step

    checkpoints._pending_step = step
    checkpoints._worker = threading.Thread(target=hand_over, name=f"checkpoint-{step}", daemon=True)
    checkpoints._worker.start()
    return True


@jax.jit
def device_copy(tree):
    """A copy of every array of `tree` in fresh device buffers (queued, not waited for):
    it survives the original being donated to the next train step."""
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
    text = one_line(error)
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
