"""Writing a run's checkpoints: the Orbax CheckpointManager of WORKDIR/checkpoints, the
config keys that set its policy, and `save`, which hands Orbax a device-side copy of the
state to write in the background (Orbax's own async checkpointing)."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import pathlib
import shutil
import threading
from typing import Mapping, Optional, Sequence

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from cifar_jax import hosts
from cifar_jax.checkpoint.layout import (ARRAY_ITEMS, BEST_METRIC, CHECKPOINT_DIR, CONFIG_FILE, FORMAT_VERSION,
                                         LAYER_NAMES, META_FILE, META_ITEM, CheckpointWriteError,
                                         quiet_abandoned_io, digest)
from cifar_jax.data.pixels import IMAGE_SIZE
from cifar_jax.config import load_saved_config
from cifar_jax.errors import CifarJaxError, ConfigError, one_line
from cifar_jax.invocation import command_line



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
    pending_step: Optional[int] = None  # the step of the last save handed to Orbax
    writers: list = dataclasses.field(default_factory=list)  # the threads Orbax started for it

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        close(self)


def checkpoint_settings(config) -> tuple[int, int]:
    """(checkpoint_every_epochs, keep_checkpoints) from `config`, checked."""
    every, keep = config.checkpoint_every_epochs, config.keep_checkpoints
    for key, value in (("checkpoint_every_epochs", every), ("keep_checkpoints", keep)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key}={value!r} must be a positive integer; set --config.{key}")
    return every, keep


def load_run_config(workdir) -> ml_collections.ConfigDict:
    """The config a run saved as WORKDIR/config.json (lists read back as tuples)."""
    file = pathlib.Path(workdir) / CONFIG_FILE
    if not file.parent.is_dir():
        raise CifarJaxError(f"workdir {workdir} does not exist; pass the --workdir of a training run")
    if not file.is_file():
        raise CifarJaxError(f"{file} is missing; pass the --workdir of a training run")
    return ml_collections.ConfigDict(load_saved_config(file))


def _best_metric(metrics) -> float:
    value = (metrics or {}).get(BEST_METRIC)
    return float(value) if isinstance(value, (int, float)) and not math.isnan(value) else -math.inf


class MetaHandler(ocp.JsonCheckpointHandler):
    """The meta item: JSON, with the SHA-256 digests of the array items added in Orbax's
    background commit, so that hashing the arrays (~90 MB for the default model) stays
    off the training loop."""

    async def async_save(self, directory, item=None, args=None):
        async def commit():
            meta = dict(args.meta, checksums={name: digest(tree) for name, tree in args.arrays.items()})
            if hosts.is_primary():
                (directory / META_FILE).write_text(json.dumps(meta))

        return [ocp.future.CommitFutureAwaitingContractedSignals(commit(), name="meta")]


@ocp.args.register_with_handler(MetaHandler, for_save=True)
@dataclasses.dataclass
class MetaSave(ocp.args.CheckpointArgs):
    meta: dict
    arrays: dict  # item name -> the device copy saved as that item


@ocp.args.register_with_handler(MetaHandler, for_restore=True)
class MetaRestore(ocp.args.JsonRestore):
    pass


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
    # use_compression=False: plain float32, so the params item's size is the model's
    # float32 size (Orbax's default zstd saves ~9 % on the default model's weights).
    handlers = {name: ocp.PyTreeCheckpointHandler(use_compression=False) for name in ARRAY_ITEMS}
    handlers[META_ITEM] = MetaHandler(filename=META_FILE)
    with _without_read_only_notice():
        return ocp.CheckpointManager(directory, options=options, item_handlers=handlers)


class _ReadOnlyNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Given directory is read only")


@contextlib.contextmanager
def _without_read_only_notice():
    """Drops the warning Orbax logs (through absl) for each read-only manager: readers open
    a run's checkpoints read-only on purpose, and `restore` from Python should be as quiet
    as the commands. Only that message, only while the manager is built."""
    logger, notice = logging.getLogger("absl"), _ReadOnlyNotice()
    logger.addFilter(notice)
    try:
        yield
    finally:
        logger.removeFilter(notice)


def open_manager(workdir, config) -> RunCheckpoints:
    """Opens (creating it) WORKDIR/checkpoints for a training run that writes checkpoints.

    Deletes leftovers of interrupted saves (`*.orbax-checkpoint-tmp-*`). Call `close`
    (or use it as a context manager) when training ends: saves run in the background.
    """
    every, keep = checkpoint_settings(config)
    directory = pathlib.Path(workdir).absolute() / CHECKPOINT_DIR
    return RunCheckpoints(_manager(directory, keep, read_only=False), directory, every, keep,
                          int(config.num_epochs), int(config.seed), json.loads(config.to_json()))


def open_reader(workdir, config) -> ocp.CheckpointManager:
    """A read-only manager of WORKDIR/checkpoints; CifarJaxError if there is none."""
    directory = pathlib.Path(workdir).absolute() / CHECKPOINT_DIR
    if not directory.is_dir():
        raise CifarJaxError(f"no checkpoints in {workdir} (no {CHECKPOINT_DIR}/ folder); {train_first(workdir)}")
    return _manager(directory, checkpoint_settings(config)[1], read_only=True)


def train_first(workdir) -> str:
    """The hint for a run's workdir without a checkpoint: the command that trains it, with
    the run's own config.json (the run started there and stopped before its first save)."""
    saved = pathlib.Path(workdir) / CONFIG_FILE
    return f"train that run (it saves after each epoch): {command_line('train', '--config', saved, '--workdir', workdir)}"


def should_save(checkpoints: RunCheckpoints, epoch: int) -> bool:
    """After every `checkpoint_every_epochs`-th epoch (0-based `epoch`), and after the last."""
    return (epoch + 1) % checkpoints.every_epochs == 0 or epoch + 1 >= checkpoints.num_epochs


def _json_value(value):
    if isinstance(value, (np.generic, jax.Array)):
        value = np.asarray(value).tolist()
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


def _key_data(rng) -> tuple[jax.Array, Optional[str]]:
    if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(rng), str(jax.random.key_impl(rng))
    return rng, None  # a raw uint32 key (jax.random.PRNGKey)


@jax.jit
def device_copy(tree):
    """A copy of every array of `tree` in fresh device buffers (queued, not waited for):
    it survives the original being donated to the next train step."""
    return jax.tree.map(lambda x: x.copy(), tree)


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
    data_order: a dict of JSON-able facts that fix the next epochs' data order besides the
        keys; default {"seed": config.seed, "next_epoch": epoch + 1}. Returned unchanged by
        `restore_latest_for_resume`.
    class_names: stored for `cifar_jax.predict`.
    steps_per_epoch: default state.step // (epoch + 1); needed to rebuild the schedule.

    The arrays are copied on the device (so the state may be donated to the next step at
    once) and handed to Orbax, which waits for the previous save, fetches the copy to the
    host and writes it in the background. Call `wait` or `close` before reading the
    checkpoint; an error of a background write is raised by the next call (as
    CheckpointWriteError when the disk refused it).
    """
    if not (force or should_save(checkpoints, epoch)):
        return False
    wait(checkpoints)  # one save at a time; raises what the previous one raised
    step = int(hosts.local_value(state.step))
    if step in checkpoints.manager.all_steps():
        return False
    if not rngs:
        raise ValueError("save() needs the run's RNG keys, e.g. rngs={'augment': key}")
    if data_order is not None and not isinstance(data_order, dict):
        raise ValueError("save() takes data_order as a dict (its meta schema; cifar_jax.checkpoint.restoring)")
    if steps_per_epoch is None and step % (epoch + 1) == 0:
        steps_per_epoch = step // (epoch + 1)
    keys = {str(name): _key_data(key) for name, key in rngs.items()}
    metrics = _json_value(dict(metrics))
    next_epoch = int(epoch) + 1
    meta = {"format": FORMAT_VERSION, "epoch": int(epoch), "next_epoch": next_epoch, "step": step,
            "steps_per_epoch": steps_per_epoch, "metrics": metrics,
            "data_order": _json_value(data_order if data_order is not None
                                      else {"seed": checkpoints.seed, "next_epoch": next_epoch}),
            "rng_impls": {name: impl for name, (_, impl) in keys.items()},
            "image_shape": [IMAGE_SIZE, IMAGE_SIZE, 3],
            "class_names": list(class_names) if class_names is not None else None,
            "config": checkpoints.config, "layer_names": LAYER_NAMES}
    train = {"opt_state": state.opt_state, "step": state.step,
             "rngs": {name: data for name, (data, _) in keys.items()}}
    arrays = dict(zip(ARRAY_ITEMS, device_copy((state.params, state.batch_stats, train))))
    args = {name: ocp.args.PyTreeSave(tree) for name, tree in arrays.items()}
    numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    checkpoints.pending_step, running = step, set(threading.enumerate())
    failure = None
    try:
        checkpoints.manager.save(step, metrics=numeric, force=True, args=ocp.args.Composite(
            **args, **{META_ITEM: MetaSave(meta, arrays)}))
    except OSError as error:  # the temporary folder could not be made, ...
        failure = one_line(error)
    finally:
        checkpoints.writers = [t for t in threading.enumerate() if t not in running]
    if failure is not None:  # raised out here, not chained to Orbax's error (quiet_abandoned_io)
        _raise_write_error(checkpoints, failure)
    return True


def wait(checkpoints: RunCheckpoints) -> None:
    """Blocks until the last save is on disk; raises what its background write raised
    (CheckpointWriteError, one line, when the disk refused the write)."""
    failure = None
    try:
        checkpoints.manager.wait_until_finished()
    except (OSError, ValueError) as error:  # TensorStore reports a failed write as ValueError
        failure = one_line(error)
    if failure is not None:
        _raise_write_error(checkpoints, failure)


def _raise_write_error(checkpoints: RunCheckpoints, problem: str):
    """Removes what the failed save left behind and raises CheckpointWriteError."""
    for thread in checkpoints.writers:  # Orbax raises the first error while other items
        if thread.name.startswith("metadata_store"):  # may still be writing into the temporary
            continue  # folder; its metadata store's thread lives as long as the manager: no join
        with contextlib.suppress(Exception):  # (some of Orbax's threads re-raise that error on join)
            thread.join(timeout=60)
    step, removed = checkpoints.pending_step, []
    for leftover in checkpoints.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
        shutil.rmtree(leftover, ignore_errors=True)
        removed.append(leftover.name)
    try:
        kept = sorted(int(p.name) for p in checkpoints.directory.iterdir() if p.name.isdigit())
    except OSError:
        kept = []
    quiet_abandoned_io()
    raise CheckpointWriteError(
        f"could not write checkpoint step {step} to {checkpoints.directory} ({problem}); "
        f"{'removed the partial write; ' if removed else ''}"
        f"earlier checkpoints are untouched ({', '.join(map(str, kept)) or 'none'}); "
        "free disk space or pass a writable --workdir, then rerun to resume"
    )


def close(checkpoints: RunCheckpoints) -> None:
    """Waits for the last save and releases the manager."""
    try:
        wait(checkpoints)
    finally:
        checkpoints.manager.close()
