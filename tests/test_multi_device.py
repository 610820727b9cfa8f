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

    import json, os, sys
    from cifar_jax.errors import ConfigError

    def records(workdir):
        lines = open(os.path.join(workdir, "metrics.jsonl")).read().splitlines()
        return [json.loads(line) for line in lines]

    # A batch size that does not split over the 4 devices is refused before anything is written.
    bad = config.copy_and_resolve_references()
    bad.eval_batch_size = 130
    try:
        train_and_evaluate(bad, os.path.join(sys.argv[1], "bad"))
        raise AssertionError("eval_batch_size=130 was accepted on 4 devices")
    except ConfigError as error:
        assert "eval_batch_size=130 does not split evenly over 4 devices" in str(error), error
    assert not os.path.exists(os.path.join(sys.argv[1], "bad"))

    # train_and_evaluate over 4 devices against the same run on one device (data_mesh None:
    # no sharding, everything on the first device).
    config.num_epochs = 1
    four_dir, one_dir = os.path.join(sys.argv[1], "four"), os.path.join(sys.argv[1], "one")
    train_and_evaluate(config, four_dir)
    real_mesh = multistep.data_mesh
    multistep.data_mesh = lambda devices=None: None
    train_and_evaluate(config, one_dir)
    multistep.data_mesh = real_mesh
    (a,), (b,) = records(four_dir), records(one_dir)
    assert a["step"] == b["step"] == 8
    np.testing.assert_allclose(a["last_lr"], b["last_lr"], rtol=1e-6)
    # The two runs are different XLA programs (sums over the batch split in four), and 8
    # Adam steps at lr up to 1e-2 amplify their rounding. Measured (jax 0.10.2, AMD EPYC):
    # train_loss 1.7e-4 and test_loss 3.6e-4 relative, train_acc 1 of 512 examples, test_acc
    # equal. Bounds 5x that: losses 2e-3 relative, accuracies 0.01 (5 of 512). A step on
    # another batch changes its loss by 6e-2 (tests/test_steps.py), and counting padding or
    # a device's share twice moves an accuracy by far more than 5 examples.
    for key in ("train_loss", "test_loss"):
        np.testing.assert_allclose(a[key], b[key], rtol=2e-3, err_msg=key)
    for key in ("train_acc", "test_acc"):
        np.testing.assert_allclose(a[key], b[key], atol=0.01, err_msg=key)
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
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1800,  # 19 min measured with both cores 7x oversubscribed
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MULTI-DEVICE OK" in result.stdout
    assert "4 devices, data parallel" in result.stdout
