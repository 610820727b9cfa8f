"""Checkpoints of a training run, with Orbax's CheckpointManager, under WORKDIR/checkpoints.

One checkpoint per saved epoch, in `WORKDIR/checkpoints/<step>/`, with four Orbax items:
`params` (float32, uncompressed), `batch_stats`, `train` (optimizer state, step, RNG key
data) and `meta` (JSON: epoch, metrics, data order, RNG implementations, class names, the
run's config, the version of the zoo's layer names, and SHA-256 digests of the three array
items). Saves run in Orbax's
background; the policy keeps the newest `keep_checkpoints` plus the best `test_acc`.
docs/checkpoints.md describes the layout, the policy and what survives which fault.

The training loop uses `open_manager`, `save`, `wait`, `restore_latest_for_resume` and
`close`; users restoring a finished run call `restore(workdir, ...)`.

Modules: `layout` (names, error types, digests; imports no other module here),
`manager` (the folder, its policy, saving), `restoring` (reading back, integrity checks).
"""
from cifar_jax.checkpoint.layout import (BEST_METRIC, CHECKPOINT_DIR, CONFIG_FILE, DAMAGED_DIR, FOREIGN_DIR,
                                         CheckpointWarning, CheckpointWriteError, DamagedCheckpoint,
                                         ForeignCheckpoint)
from cifar_jax.checkpoint.manager import (RunCheckpoints, checkpoint_settings, close, device_copy, load_run_config,
                                          open_manager, save, should_save, wait)
from cifar_jax.checkpoint.restoring import (Resume, abstract_train_state, available_steps, checkpoint_info,
                                            directory_bytes, restore, restore_latest_for_resume)

__all__ = [
    "BEST_METRIC", "CHECKPOINT_DIR", "CONFIG_FILE", "DAMAGED_DIR", "FOREIGN_DIR", "CheckpointWarning",
    "CheckpointWriteError", "DamagedCheckpoint", "ForeignCheckpoint", "Resume", "RunCheckpoints",
    "abstract_train_state", "available_steps", "checkpoint_info", "checkpoint_settings", "close",
    "device_copy", "directory_bytes", "load_run_config", "open_manager", "restore",
    "restore_latest_for_resume", "save", "should_save", "wait",
]
