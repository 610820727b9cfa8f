"""Where a run's checkpoints live and which are kept: the Orbax CheckpointManager of
WORKDIR/checkpoints, and the config keys that set its policy."""
from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import threading
from typing import Optional

import ml_collections
import orbax.checkpoint as ocp

from cifar_jax.errors import CifarJaxError, ConfigError, one_line

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
        from cifar_jax.checkpoint.saving import close

        close(self)


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
        raise CifarJaxError(f"{file} is not readable JSON ({one_line(error)}); restore it from the run")
    if not isinstance(values, dict):
        raise CifarJaxError(f"{file} does not hold a config object; restore it from the run")
    for key, default in CHECKPOINT_CONFIG_DEFAULTS.items():
        values.setdefault(key, default)
    return ml_collections.ConfigDict(_tuples(values))


def _best_metric(metrics) -> float:
    value = (metrics or {}).get(BEST_METRIC)
    return float(value) if isinstance(value, (int, float)) and not math.isnan(value) else -math.inf


def _item_handlers() -> dict:
    # use_compression=False: plain float32, so the params item's size is the model's
    # float32 size (Orbax's default zstd saves ~9 % on the default model's weights).
    handlers = {name: ocp.PyTreeCheckpointHandler(use_compression=False) for name in ARRAY_ITEMS}
    handlers[META_ITEM] = ocp.JsonCheckpointHandler()
    return handlers


def make_manager(directory: pathlib.Path, keep: int, read_only: bool) -> ocp.CheckpointManager:
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
    return RunCheckpoints(make_manager(directory, keep, read_only=False), directory, every, keep,
                          int(config.num_epochs), int(config.seed), json.loads(config.to_json()))


def open_reader(workdir, config) -> ocp.CheckpointManager:
    directory = pathlib.Path(workdir).absolute() / CHECKPOINT_DIR
    if not directory.is_dir():
        raise CifarJaxError(
            f"no checkpoints in {workdir} (no {CHECKPOINT_DIR}/ folder); train with "
            f"python -m cifar_jax.train --workdir {workdir} first"
        )
    return make_manager(directory, checkpoint_settings(config)[1], read_only=True)


def should_save(checkpoints: RunCheckpoints, epoch: int) -> bool:
    """After every `checkpoint_every_epochs`-th epoch (0-based `epoch`), and after the last."""
    return (epoch + 1) % checkpoints.every_epochs == 0 or epoch + 1 >= checkpoints.num_epochs
