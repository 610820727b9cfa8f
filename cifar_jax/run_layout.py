"""The names of the files in a run's workdir, for every module that reads or writes one.

Imports nothing: `report` reads them without importing JAX (run_dir, which checks a
workdir against a config, imports the config module and through it JAX).
"""
from __future__ import annotations

CONFIG_FILE = "config.json"  # the resolved config of the run
METRICS_FILE = "metrics.jsonl"  # one JSON object per finished epoch
CURVES_FILE = "curves.png"  # cifar_jax.report.write_curves
CHECKPOINT_DIR = "checkpoints"  # cifar_jax.checkpoint
TENSORBOARD_DIR = "tensorboard"  # cifar_jax.tensorboard


def confusion_file(step) -> str:
    """The name of evaluate's confusion figure of the checkpoint at `step` (an int), or of
    another source (a string such as "torch-weights"): one file per source, none replaced
    by evaluating another."""
    return f"confusion-step{step}.png" if isinstance(step, int) else f"confusion-{step}.png"
