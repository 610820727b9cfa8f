"""Two processes (hosts) training one run through `python -m cifar_jax.train`, started
with jax.distributed from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID,
give the training of one process over the same two devices, write each file once, and
resume from a checkpoint they wrote."""
import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from cifar_jax import checkpoint
from tests.conftest import REPO

ARGS = ["-m", "cifar_jax.train", "--config", str(REPO / "configs" / "smoke.py"), "--config.num_epochs=2"]


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


@pytest.mark.slow  # three fresh JAX processes compiling the smoke step: about a minute on 2 cores
def test_two_processes_train_like_one_process_on_two_devices(tmp_path):
    one = tmp_path / "one_process"
    result = subprocess.run([sys.executable, *ARGS, "--workdir", str(one)], cwd=REPO, text=True,
                            capture_output=True, timeout=600,
                            env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=2"))
    assert result.returncode == 0, result.stderr[-3000:]

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
