"""Several devices and several processes. Data parallelism over 2 CPU devices (XLA's forced
host device count, fixed at JAX's start: a subprocess) trains like one device; two
processes (hosts) training one run through `python -m cifar_jax.train`, started with
jax.distributed from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, give
the training of that one process over the same two devices, write each file once, and
resume from a checkpoint they wrote. The one 2-device process serves both checks."""
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from cifar_jax import checkpoint
from tests.conftest import REPO

ARGS = ["-m", "cifar_jax.train", "--config", str(REPO / "configs" / "smoke.py"), "--config.num_epochs=2"]

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np, optax
    from cifar_jax import multistep
    from cifar_jax.config import load_config_file
    from cifar_jax.steps import create_train_state
    from cifar_jax.train import train_and_evaluate

    assert jax.device_count() == 2, jax.devices()
    config = load_config_file("configs/smoke.py")
    state = create_train_state(jax.random.key(0), config, steps_per_epoch=3)
    # Plain SGD with a small, stable lr: Adam's first steps are +-lr per weight whatever
    # the gradient, and a diverging run would amplify rounding; this keeps it sharp.
    sgd = optax.inject_hyperparams(optax.sgd)(learning_rate=0.005)
    state = state.replace(tx=sgd, opt_state=sgd.init(state.params))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    labels = (np.arange(40) % 10).astype(np.int32)
    # 40 examples in batches of 16: the last batch has 8 real ones, 4 per device.
    order, mask = multistep.epoch_order(jax.random.key(1), 0, 40, 16)
    key = jax.random.key(2)

    def run(mesh):
        placed = multistep.replicate((jax.tree.map(jnp.copy, state), images, labels), mesh)
        return multistep.train_steps(*placed, order, mask, key, sharding=multistep.batch_sharding(mesh))

    one, m1 = run(None)
    mesh = multistep.data_mesh()
    two, m2 = run(mesh)
    assert mesh.size == 2
    assert len(two.params["conv1"]["Conv_0"]["kernel"].sharding.device_set) == 2
    np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-5)
    np.testing.assert_array_equal(m1["count"], m2["count"])
    # Global-batch BatchNorm: running statistics match the single-device ones (per-device
    # statistics, over 4-8 examples each, would differ by tens of percent). atol: sums of
    # O(1) activations in another order can leave a small mean off by ~1e-5.
    for tree in ("batch_stats", "params"):
        for (path, a), b in zip(jax.tree.leaves_with_path(getattr(one, tree)), jax.tree.leaves(getattr(two, tree))):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=tree + jax.tree_util.keystr(path))

    import json, os, sys
    from cifar_jax.errors import ConfigError

    def records(workdir):
        lines = open(os.path.join(workdir, "metrics.jsonl")).read().splitlines()
        return [json.loads(line) for line in lines]

    # A batch size that does not split over the 2 devices is refused before anything is written.
    bad = config.copy_and_resolve_references()
    bad.eval_batch_size = 63
    try:
        train_and_evaluate(bad, os.path.join(sys.argv[1], "bad"))
        raise AssertionError("eval_batch_size=63 was accepted on 2 devices")
    except ConfigError as error:
        assert "eval_batch_size=63 does not split evenly over 2 devices" in str(error), error
    assert not os.path.exists(os.path.join(sys.argv[1], "bad"))

    # train_and_evaluate over 2 devices (what `python -m cifar_jax.train --config smoke
    # --config.num_epochs=2` does in this process: the 2-process test's reference) against the
    # same run on one device (data_mesh None: no sharding, everything on the first device).
    config.num_epochs = 2
    two_dir, one_dir = os.path.join(sys.argv[1], "two_devices"), os.path.join(sys.argv[1], "one_device")
    train_and_evaluate(config, two_dir)
    real_mesh = multistep.data_mesh
    multistep.data_mesh = lambda devices=None: None
    train_and_evaluate(config, one_dir)
    multistep.data_mesh = real_mesh
    two_runs = list(zip(records(two_dir), records(one_dir)))
    assert [(a["step"], b["step"]) for a, b in two_runs] == [(8, 8), (16, 16)]
    # The two runs are different XLA programs (sums over the batch split in two), and Adam
    # steps at lr up to 1e-2 amplify their rounding. Measured (jax 0.10.2, AMD EPYC,
    # 2026-12-04), epochs 0 / 1: train_loss 1.5e-7 / 8.8e-6 relative, test_loss 2.7e-5 /
    # 7.8e-5, accuracies equal. Bounds far above that, for other CPUs' rounding: losses 2e-3
    # relative, accuracies 5 examples. A step on another batch changes its loss by 6e-2
    # (tests/test_steps.py), and counting padding or a device's share twice moves an accuracy
    # by far more than 5 examples.
    for a, b in two_runs:
        np.testing.assert_allclose(a["last_lr"], b["last_lr"], rtol=1e-6)
        for key in ("train_loss", "test_loss"):
            np.testing.assert_allclose(a[key], b[key], rtol=2e-3, err_msg=key)
        for key, n in (("train_acc", 250), ("test_acc", 125)):
            np.testing.assert_allclose(a[key], b[key], atol=5.01 / n, err_msg=key)
    print("MULTI-DEVICE OK")
    """
)


# What JAX's cluster detection (jax/_src/clusters/*.py, jax 0.10) and jax.distributed read:
# a test run inside a SLURM job, under Open MPI's mpirun, in a Kubernetes pod or on a Cloud
# TPU VM must not have JAX join (or wait for) that cluster instead of the test's processes.
_CLUSTER_PREFIXES = ("SLURM_", "OMPI_", "PMI_", "PMIX_", "KUBERNETES_", "JOBSET_", "TPU_", "MEGASCALE_", "JAX_")
_CLUSTER_NAMES = ("JOB_COMPLETION_INDEX", "CLOUD_TPU_TASK_ID", "XLA_FLAGS")


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(_CLUSTER_PREFIXES) and k not in _CLUSTER_NAMES}
    # Kept from the parent: the test session's compilation cache (tests/conftest.py).
    env.update({k: v for k, v in os.environ.items() if k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE"))})
    return dict(env, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", **extra)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _port_taken(stderr: str) -> bool:
    return any(text in stderr.lower() for text in ("address already in use", "failed to bind", "eaddrinuse"))


def _train_two_processes(workdir, attempts=3):
    """Both processes' stdout. The port is free when chosen but not held (the coordinator
    binds it itself): if something takes it meanwhile, try again with another one."""
    for attempt in range(attempts):
        port = _free_port()
        processes = [
            subprocess.Popen([sys.executable, *ARGS, "--workdir", str(workdir)], cwd=REPO, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=_env(JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
                                      JAX_PROCESS_ID=str(i)))
            for i in range(2)
        ]
        outputs = [p.communicate(timeout=600) for p in processes]
        if attempt + 1 < attempts and any(p.returncode and _port_taken(err) for p, (_, err) in zip(processes, outputs)):
            continue
        for p, (out, err) in zip(processes, outputs):
            assert p.returncode == 0, err[-3000:]
        return [out for out, _ in outputs]


def _params(workdir):
    state, _ = checkpoint.restore(workdir)
    return int(state.step), state.params


@pytest.fixture(scope="module")
def two_devices(tmp_path_factory):
    """SCRIPT in one process over 2 forced CPU devices: its output and its run folders."""
    root = tmp_path_factory.mktemp("devices")
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(root)], cwd=REPO, text=True, capture_output=True,
                            timeout=1200, env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=2"))
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout, root


@pytest.mark.slow  # a fresh JAX process compiling sharded and unsharded steps: about a minute on 2 cores
def test_two_devices_train_like_one(two_devices):
    out, _ = two_devices
    assert "MULTI-DEVICE OK" in out
    assert "2 devices, data parallel" in out


@pytest.mark.slow  # two more pairs of JAX processes compiling the 2-process steps
def test_two_processes_train_like_one_process_on_two_devices(two_devices, tmp_path):
    one = two_devices[1] / "two_devices"  # the same run in one process over 2 devices
    two = tmp_path / "two_processes"
    primary_out, other_out = _train_two_processes(two)
    assert "2 devices, data parallel over 2 processes" in primary_out
    assert "Epoch [1]" in primary_out and "Epoch" not in other_out  # one log, from process 0
    assert sorted(p.name for p in two.iterdir()) == ["checkpoints", "config.json", "curves.png", "metrics.jsonl",
                                                     "tensorboard"]
    assert len(list((two / "tensorboard").iterdir())) == 1  # one event file, from process 0
    lines = (two / "metrics.jsonl").read_text().splitlines()
    reference = (one / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # each epoch written once
    for line, ref in zip(lines, reference):
        a, b = json.loads(line), json.loads(ref)
        for key in ("train_loss", "train_acc", "test_loss", "test_acc", "last_lr", "step"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-6, err_msg=key)
    step, params = _params(two)
    ref_step, ref_params = _params(one)
    assert step == ref_step == 16
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), params, ref_params)

    # Both processes resume from a checkpoint they wrote together.
    shutil.rmtree(two / "checkpoints" / "16")
    primary_out, _ = _train_two_processes(two)
    assert "Resuming after epoch 0 (step 8)" in primary_out
    step, params = _params(two)
    assert step == 16
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), params, ref_params)
    assert len((two / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("env, message", [
    ({"JAX_NUM_PROCESSES": "two"}, "JAX_NUM_PROCESSES='two' and JAX_PROCESS_ID must be integers"),
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"},
     "cannot start 2 processes (coordinator_address should be defined.); set JAX_COORDINATOR_ADDRESS="),
])
def test_a_bad_process_setup_is_one_line(tmp_path, monkeypatch, env, message):
    # As if the suite ran inside a SLURM job step and an mpirun: the child must not see it.
    for key, value in {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "node1", "SLURM_NTASKS": "2",
                       "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_STEP_NUM_NODES": "1",
                       "OMPI_MCA_orte_hnp_uri": "1.0;tcp://10.0.0.1:4242", "OMPI_COMM_WORLD_SIZE": "2",
                       "OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    environment = {k: v for k, v in _env(**env).items() if k != "JAX_COORDINATOR_ADDRESS"}
    result = subprocess.run([sys.executable, *ARGS, "--workdir", str(tmp_path / "run")], cwd=REPO, text=True,
                            capture_output=True, timeout=120, env=environment)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: " + message)
    assert not (tmp_path / "run").exists()
