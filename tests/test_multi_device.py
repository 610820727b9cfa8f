"""Data parallelism over 4 CPU devices (XLA's forced host device count) gives the same
training as one device. Runs in a subprocess: the device count is fixed at JAX start."""
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np, optax
    from cifar_jax import multistep
    from cifar_jax.config import load_config_file
    from cifar_jax.steps import create_train_state
    from cifar_jax.train import train_and_evaluate

    assert jax.device_count() == 4, jax.devices()
    config = load_config_file("configs/smoke.py")
    state = create_train_state(jax.random.key(0), config, steps_per_epoch=3)
    # Plain SGD with a small, stable lr: Adam's first steps are +-lr per weight whatever
    # the gradient, and a diverging run would amplify rounding; this keeps it sharp.
    sgd = optax.inject_hyperparams(optax.sgd)(learning_rate=0.005)
    state = state.replace(tx=sgd, opt_state=sgd.init(state.params))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    labels = (np.arange(40) % 10).astype(np.int32)
    # 40 examples in batches of 16: the last batch has 8 real ones, 2 per device.
    order, mask = multistep.epoch_order(jax.random.key(1), 0, 40, 16)
    key = jax.random.key(2)

    def run(mesh):
        placed = multistep.replicate((jax.tree.map(jnp.copy, state), images, labels), mesh)
        return multistep.train_steps(*placed, order, mask, key, sharding=multistep.batch_sharding(mesh))

    one, m1 = run(None)
    mesh = multistep.data_mesh()
    four, m4 = run(mesh)
    assert mesh.size == 4
    assert len(four.params["conv1"]["Conv_0"]["kernel"].sharding.device_set) == 4
    np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-5)
    np.testing.assert_array_equal(m1["count"], m4["count"])
    # Global-batch BatchNorm: running statistics match the single-device ones (per-device
    # statistics, over 2-4 examples each, would differ by tens of percent). atol: sums of
    # O(1) activations in another order can leave a small mean off by ~1e-5.
    for tree in ("batch_stats", "params"):
        for (path, a), b in zip(jax.tree.leaves_with_path(getattr(one, tree)), jax.tree.leaves(getattr(four, tree))):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=tree + jax.tree_util.keystr(path))

    config.num_epochs = 1
    import sys
    train_and_evaluate(config, sys.argv[1])
    print("MULTI-DEVICE OK")
    """
)


@pytest.mark.slow  # a fresh JAX process compiling for 4 devices: over a minute on 2 cores
def test_four_devices_train_like_one(tmp_path):
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
    )
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "run")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MULTI-DEVICE OK" in result.stdout
    assert "4 devices, data parallel" in result.stdout
