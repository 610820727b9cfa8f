"""A run stopped after an epoch and started again ends exactly like one that never stopped."""
import json
import shlex
import shutil

import jax
import numpy as np
import pytest

from cifar_jax.checkpoint import CheckpointWarning, restore
from cifar_jax.train import main, train_and_evaluate

TIMING = ("train_seconds", "epoch_seconds")


def _records(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


@pytest.fixture(scope="module")
def uninterrupted(smoke_run):
    """The suite's shared smoke run (tests/conftest.py): config, workdir, final state."""
    return smoke_run.config, smoke_run.workdir, smoke_run.state


def _damage(checkpoint_dir, how):
    if how == "removed":  # as if the run had stopped before saving the last epoch
        shutil.rmtree(checkpoint_dir)
    else:  # a file cut short, as a crash or a full disk leaves it
        biggest = max((p for p in checkpoint_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
        biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])


@pytest.mark.parametrize("how", ["removed", "truncated"])
def test_resume_after_epoch_1_matches_the_uninterrupted_run(tmp_path, uninterrupted, how, capsys):
    config, straight_dir, straight = uninterrupted
    workdir = tmp_path / "run"
    shutil.copytree(straight_dir, workdir)  # the same run, stopped below before its last save
    last = workdir / "checkpoints" / str(int(straight.step))
    _damage(last, how)
    capsys.readouterr()
    if how == "truncated":
        with pytest.warns(CheckpointWarning, match=f"step {int(straight.step)}"):
            resumed = train_and_evaluate(config, str(workdir))
    else:
        resumed = train_and_evaluate(config, str(workdir))
    captured = capsys.readouterr()
    out = captured.out
    assert "\r" not in captured.err  # stderr is no terminal here: no progress-bar updates
    assert "Resuming after epoch 1 (step 16)" in out
    assert "Epoch [0]" not in out and "Epoch [2]" in out
    # The summary at the end: the whole run's epochs, this command's one, the files.
    summary = out[out.index("Run finished"):]
    assert summary.startswith(f"Run finished: 3 epochs trained, in {workdir}\n")
    assert "wall for this command, which trained 1 epoch\n" in summary
    assert "train images/s (one epoch, compiling included)\n" in summary
    for name in ("checkpoints", "metrics.jsonl", "curves.png", "tensorboard"):
        assert f" {workdir / name}" in summary, name
    assert f"tensorboard --logdir {workdir / 'tensorboard'}" in summary
    assert f"python -m cifar_jax.evaluate --workdir {workdir} --best" in summary
    assert int(resumed.step) == int(straight.step)
    # Same metrics, line for line, and no duplicate line for the epoch trained twice.
    resumed_records, straight_records = _records(workdir), _records(straight_dir)
    assert len(resumed_records) == len(straight_records) == 3
    for a, b in zip(resumed_records, straight_records):
        assert a == pytest.approx(b, rel=1e-6)
    for a, b in zip(jax.tree.leaves((resumed.params, resumed.batch_stats, resumed.opt_state)),
                    jax.tree.leaves((straight.params, straight.batch_stats, straight.opt_state))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    # The re-saved last checkpoint restores to the same weights.
    variables, _ = restore(str(workdir), variables_only=True)
    for a, b in zip(jax.tree.leaves(variables["params"]), jax.tree.leaves(straight.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    assert (workdir / "curves.png").stat().st_size > 0


def test_rerunning_a_finished_run_trains_nothing(uninterrupted, tmp_path, capsys):
    config, finished, straight = uninterrupted
    workdir = shutil.copytree(finished, tmp_path / "run")
    before = (workdir / "metrics.jsonl").read_text()
    capsys.readouterr()
    state = train_and_evaluate(config, str(workdir))
    out = capsys.readouterr().out
    assert "Epoch [" not in out and "Resuming" not in out
    assert (workdir / "metrics.jsonl").read_text() == before
    assert int(state.step) == int(straight.step)
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if "already complete" in line)
    assert lines[at] == (f"The run in {workdir} is already complete: 3 epochs trained (checkpoint step 24, "
                         "num_epochs=3); nothing was trained.")
    line = lines[at + 1]
    assert line.startswith("To train it longer, raise num_epochs, e.g. to 6: ")
    assert "  time         nothing was trained by this command" in out
    # The command it suggests runs as printed, and would train epochs 3..5 (a dry run: no training).
    argv = shlex.split(line[line.index("python -m cifar_jax.train"):])
    assert argv[:3] == ["python", "-m", "cifar_jax.train"] and argv[-1] == "--config.num_epochs=6"
    assert main(argv[3:] + ["--dry-run"]) == 0
    assert (f"Workdir: {workdir}: a run resumes after epoch 2 at step 24 from {workdir / 'checkpoints' / '24'} "
            "and trains epochs 3..5") in capsys.readouterr().out
