"""Run folders with real Orbax checkpoints for the checkpoint/evaluate/predict tests,
built without training: one smoke train state (created once per session), varied per
epoch with host-side arithmetic, saved through cifar_jax.checkpoint like the loop does."""
from __future__ import annotations

import functools
import os
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np

from cifar_jax import checkpoint
from tests.conftest import REPO

STEPS_PER_EPOCH = 8  # 250 synthetic training images / batch 32 in configs/smoke.py (the last batch padded)
CLASS_NAMES = tuple(f"class_{i:02d}" for i in range(10))


def smoke_config(**overrides):
    from cifar_jax.config import load_config_file

    config = load_config_file(str(REPO / "configs" / "smoke.py"))
    with config.unlocked():
        for key, value in overrides.items():
            config[key] = value
    return config


@functools.lru_cache(maxsize=None)
def smoke_state():
    """The smoke config's fresh TrainState (model.init is slow on CPU: built once)."""
    from cifar_jax.steps import create_train_state

    return create_train_state(jax.random.key(0), smoke_config(), STEPS_PER_EPOCH)


def _host(fn, tree):
    # numpy arithmetic, then one device_put: nothing to compile.
    return jax.tree.map(lambda x: jnp.asarray(fn(np.asarray(x))), tree)


def state_after(epoch: int):
    """A distinct, finite state per epoch: params scaled, Adam moments and counts moved."""
    state = smoke_state()
    return state.replace(
        params=_host(lambda x: x * np.float32(1 + 0.01 * epoch), state.params),
        batch_stats=_host(lambda x: x + np.float32(0.1 * epoch), state.batch_stats),
        opt_state=_host(lambda x: x + np.asarray(epoch + 1, x.dtype), state.opt_state),
        step=jnp.asarray((epoch + 1) * STEPS_PER_EPOCH, jnp.int32),
    )


def rngs_after(epoch: int) -> dict:
    return {"augment": jax.random.key(100 + epoch), "data": jax.random.PRNGKey(200 + epoch)}


def write_config(workdir: pathlib.Path, config) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / checkpoint.CONFIG_FILE).write_text(config.to_json(indent=2))  # as train.py


def make_run(workdir, accuracies, config=None, epochs=None):
    """A workdir with config.json and checkpoints of epochs 0.. with these test accuracies;
    returns the steps saved (the policy decides which are kept)."""
    workdir = pathlib.Path(workdir)
    config = config or smoke_config(num_epochs=len(accuracies))
    write_config(workdir, config)
    saved = []
    with checkpoint.open_manager(workdir, config) as checkpoints:
        for epoch in epochs if epochs is not None else range(len(accuracies)):
            metrics = {"epoch": epoch, "test_acc": accuracies[epoch], "test_loss": 2.0 - epoch / 10}
            if checkpoint.save(checkpoints, state_after(epoch), epoch, metrics,
                               rngs=rngs_after(epoch), class_names=CLASS_NAMES):
                saved.append((epoch + 1) * STEPS_PER_EPOCH)
    return saved


def copy_run(source, target) -> pathlib.Path:
    shutil.copytree(source, target)
    return pathlib.Path(target)


def step_dir(workdir, step) -> pathlib.Path:
    return pathlib.Path(workdir) / checkpoint.CHECKPOINT_DIR / str(step)


def biggest_file(folder) -> pathlib.Path:
    files = [p for p in pathlib.Path(folder).rglob("*") if p.is_file()]
    return max(files, key=lambda p: p.stat().st_size)


def truncate(path) -> None:
    os.truncate(path, os.path.getsize(path) // 2)


def assert_trees_equal(actual, expected) -> None:
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), actual, expected)
