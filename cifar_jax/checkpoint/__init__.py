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

Modules: `manager` (folder, policy, config), `saving`, `restoring`, `integrity` (digests
and the checks that tell damaged or foreign checkpoints apart).
"""
from cifar_jax.checkpoint.integrity import DamagedCheckpoint, ForeignCheckpoint
from cifar_jax.checkpoint.manager import (
    BEST_METRIC,
    CHECKPOINT_DIR,
    CONFIG_FILE,
    DAMAGED_DIR,
    FOREIGN_DIR,
    RunCheckpoints,
    checkpoint_settings,
    load_run_config,
    open_manager,
    should_save,
)
from cifar_jax.checkpoint.restoring import (
    CheckpointWarning,
    Resume,
    abstract_train_state,
    available_steps,
    checkpoint_info,
    directory_bytes,
    restore,
    restore_latest_for_resume,
)
from cifar_jax.checkpoint.saving import CheckpointWriteError, close, device_copy, save, wait

__all__ = [
    "BEST_METRIC", "CHECKPOINT_DIR", "CONFIG_FILE", "DAMAGED_DIR", "FOREIGN_DIR", "CheckpointWarning",
    "CheckpointWriteError", "DamagedCheckpoint", "ForeignCheckpoint", "Resume", "RunCheckpoints",
    "abstract_train_state", "available_steps", "checkpoint_info", "checkpoint_settings", "close",
    "device_copy", "directory_bytes", "load_run_config", "open_manager", "restore",
    "restore_latest_for_resume", "save", "should_save", "wait",
]
