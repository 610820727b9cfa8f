"""Runs that survive faults: SIGTERM/SIGINT during training, NaN/inf steps, determinism."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar_jax import faults, multistep, train
from cifar_jax.train import train_and_evaluate
from tests.conftest import REPO

TIMING = ("train_seconds", "epoch_seconds")


def _records(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


# `python -m cifar_jax.train`, but with SIGINT and SIGTERM at Python's defaults: a child
# inherits ignored signals (a test run under nohup, `trap '' INT TERM`, or in a script's
# background), and these tests are about what a user's process does with a real signal.
CHILD_WITH_DEFAULT_SIGNALS = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "signal.signal(signal.SIGTERM, signal.SIG_DFL); sys.argv[0] = 'cifar_jax.train'; "
    "runpy.run_module('cifar_jax.train', run_name='__main__', alter_sys=True)"
)


def _sentinel_handler(signum, frame):  # installed around a test; never meant to run
    raise AssertionError(f"signal {signum} reached the handler that was installed before the run")


def _steps_on_disk(workdir):
    folder = workdir / "checkpoints"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def _smoke(**overrides):
    from cifar_jax.config import load_config_file

    config = load_config_file(str(REPO / "configs" / "smoke.py"))
    with config.unlocked():
        config.update(overrides)
    return config


@pytest.fixture(scope="module")
def uninterrupted(smoke_run):
    """The suite's shared smoke run (tests/conftest.py): its workdir and final state."""
    return smoke_run.workdir, smoke_run.state


def _assert_same_run(workdir, straight_dir, state=None, straight=None):
    a, b = _records(workdir), _records(straight_dir)
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        assert x == pytest.approx(y, rel=1e-6)
    if state is not None:
        for x, y in zip(jax.tree.leaves((state.params, state.batch_stats, state.opt_state)),
                        jax.tree.leaves((straight.params, straight.batch_stats, straight.opt_state))):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------- signals


@pytest.mark.slow  # two CLI processes and an uninterrupted run: over a minute on 2 cores
def test_sigterm_from_outside_checkpoints_exits_143_and_the_rerun_resumes(tmp_path, uninterrupted, capsys):
    """A real process and a real SIGTERM, sent once 'Epoch [0]' is printed."""
    straight_dir, straight = uninterrupted
    workdir = tmp_path / "run"
    command = [sys.executable, "-c", CHILD_WITH_DEFAULT_SIGNALS, "--config", str(REPO / "configs" / "smoke.py"),
               "--workdir", str(workdir)]
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 240
        for line in process.stdout:  # blocks per line; the deadline guards a silent hang
            lines.append(line)
            if line.startswith("Epoch [0]"):
                process.send_signal(signal.SIGTERM)
                break
            assert time.monotonic() < deadline, "".join(lines)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, err[-2000:]
    message = [line for line in err.splitlines() if "interrupted" in line]
    assert message and message[-1].startswith("interrupted by SIGTERM: checkpoint step "), err[-2000:]
    assert "rerun the same command to resume" in message[-1]
    assert "Traceback" not in err
    assert "Epoch [2]" not in out  # it stopped, it did not run to the end
    assert _steps_on_disk(workdir) and not (workdir / ".lock").exists()
    # Rerunning the same command resumes and ends exactly like the uninterrupted run.
    capsys.readouterr()
    assert train.main(command[3:]) == 0
    assert "Resuming after epoch" in capsys.readouterr().out
    _assert_same_run(workdir, straight_dir)


def test_sigint_mid_epoch_saves_the_last_finished_epoch_and_exits_130(tmp_path, uninterrupted, monkeypatch, capsys):
    """Ctrl-C in epoch 1 of a run that saves every 2nd epoch: epoch 0 had no checkpoint,
    so it is saved on the way out; the partial epoch 1 is dropped and trained again."""
    straight_dir, straight = uninterrupted
    workdir = tmp_path / "run"
    argv = ["--config", str(REPO / "configs" / "smoke.py"), "--workdir", str(workdir),
            "--config.checkpoint_every_epochs=2"]
    real = multistep.train_steps

    def ctrl_c_at_step_11(state, *args, **kwargs):
        if int(state.step) == 11:
            os.kill(os.getpid(), signal.SIGINT)
        return real(state, *args, **kwargs)

    monkeypatch.setattr(multistep, "train_steps", ctrl_c_at_step_11)
    # Whatever handler was there before the run is there after it: install a known one (the
    # handler pytest started with may be the default, or SIG_IGN under nohup / `trap '' INT`).
    before = signal.signal(signal.SIGINT, _sentinel_handler)
    try:
        assert train.main(argv) == 130
        assert signal.getsignal(signal.SIGINT) is _sentinel_handler  # handler restored
    finally:
        signal.signal(signal.SIGINT, before)
    captured = capsys.readouterr()
    assert "Epoch [1]" not in captured.out
    assert "interrupted by SIGINT: checkpoint step 8 (after epoch 0)" in captured.err
    assert _steps_on_disk(workdir) == [8]
    monkeypatch.setattr(multistep, "train_steps", real)
    assert train.main(argv) == 0
    assert "Resuming after epoch 0 (step 8)" in capsys.readouterr().out
    _assert_same_run(workdir, straight_dir)


# ----------------------------------------------------------------------------- NaN / inf


def _poison_labels(steps):
    """train_steps whose batches get out-of-range labels (NaN loss) at these global steps."""
    real = multistep.train_steps

    def poisoned(state, images, labels, *args, **kwargs):
        if int(state.step) in steps:
            labels = jnp.full_like(labels, 1000)
        return real(state, images, labels, *args, **kwargs)

    return poisoned


def test_a_nan_loss_stops_at_once_without_saving_the_bad_state(tmp_path, monkeypatch, capsys):
    workdir = tmp_path / "run"
    monkeypatch.setattr(multistep, "train_steps", _poison_labels(range(12, 100)))
    with pytest.raises(faults.NonFiniteError) as error:
        train_and_evaluate(_smoke(), str(workdir))
    message = str(error.value)
    assert "NaN/inf at step 12 (epoch 1, learning rate " in message
    assert "last good checkpoint: checkpoint step 8 (epoch 0)" in message
    assert "skip_nonfinite_steps" in message and "\n" not in message
    assert _steps_on_disk(workdir) == [8]  # nothing of epoch 1 was written
    assert [r["epoch"] for r in _records(workdir)] == [0]
    assert not (workdir / ".lock").exists()
    # The CLI prints it as one line and exits 2.
    argv = ["--config", str(REPO / "configs" / "smoke.py"), "--workdir", str(tmp_path / "cli")]
    monkeypatch.setattr(multistep, "train_steps", _poison_labels(range(0, 100)))
    capsys.readouterr()
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: loss or gradients became NaN/inf at step 0")
    assert "last good checkpoint: none" in err[-1]


@pytest.mark.slow  # compiles the skipping variant of the train step
def test_skip_nonfinite_steps_skips_and_counts_them(tmp_path, monkeypatch, capsys):
    workdir = tmp_path / "run"
    monkeypatch.setattr(multistep, "train_steps", _poison_labels(range(12, 16)))
    state = train_and_evaluate(_smoke(skip_nonfinite_steps=True), str(workdir))
    records = _records(workdir)
    assert [r["skipped_steps"] for r in records] == [0, 4, 0]
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["test_loss"]) for r in records)
    assert "skipped 4 non-finite steps" in capsys.readouterr().out
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))
    assert int(state.step) == 24


def test_first_nonfinite():
    assert faults.first_nonfinite({"finite": np.array([True, True])}) is None
    assert faults.first_nonfinite({"finite": np.array([True, False, False])}) == 1
    assert faults.first_nonfinite({}) is None


# ----------------------------------------------------------------------------- determinism


def test_same_config_and_seed_give_identical_runs_on_cpu(tmp_path, uninterrupted):
    straight_dir, straight = uninterrupted
    workdir = tmp_path / "again"
    state = jax.device_get(train_and_evaluate(_smoke(), str(workdir)))
    assert _records(workdir) == _records(straight_dir)  # bit for bit, not approximately
    for a, b in zip(jax.tree.leaves((state.params, state.batch_stats, state.opt_state)),
                    jax.tree.leaves((straight.params, straight.batch_stats, straight.opt_state))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_second_signal_stops_at_once():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with faults.catch_signals() as stop:
        assert not stop
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop and stop.name == "SIGTERM"
        with pytest.raises(SystemExit) as exit_:
            os.kill(os.getpid(), signal.SIGTERM)
        assert exit_.value.code == 143
    with faults.catch_signals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    # The handlers the process had before (whatever they were: SIG_IGN under `trap '' TERM`).
    assert {s: signal.getsignal(s) for s in before} == before
    # Also when they were not the defaults.
    previous = {s: signal.signal(s, _sentinel_handler) for s in before}
    try:
        with faults.catch_signals():
            assert signal.getsignal(signal.SIGTERM) is not _sentinel_handler
        assert all(signal.getsignal(s) is _sentinel_handler for s in before)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def test_ctrl_c_before_training_starts_exits_130_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    """A real SIGINT while the data loads (before the loop's own handler is installed): the
    command exits 130 with one line, and the new workdir it had created is gone again."""
    from cifar_jax.data import dataset

    def ctrl_c_while_loading(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        raise AssertionError("SIGINT did not interrupt the data loading")

    monkeypatch.setattr(dataset, "make_synthetic", ctrl_c_while_loading)  # the name load_dataset calls
    workdir = tmp_path / "run"
    # What Ctrl-C does in an ordinary Python process, even if this one started with SIGINT ignored.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code = train.main(["--config", str(REPO / "configs" / "smoke.py"), "--workdir", str(workdir)])
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)
    assert code == 130
    assert capsys.readouterr().err.strip().splitlines() == [
        "interrupted by SIGINT before training started; nothing was saved"]
    assert not workdir.exists()
