import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from cifar_jax import checkpoint
from cifar_jax.errors import CifarJaxError
from tests.checkpoint_runs import (
    CLASS_NAMES,
    assert_trees_equal,
    biggest_file,
    copy_run,
    make_run,
    rngs_after,
    smoke_config,
    smoke_state,
    state_after,
    step_dir,
    truncate,
    write_config,
)
from tests.conftest import REPO

ACCURACIES = [0.1, 0.9, 0.2, 0.3, 0.4]  # best at epoch 1 (step 16)



@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Five epochs saved with keep_checkpoints=2: kept are the best (16) and the last two."""
    workdir = tmp_path_factory.mktemp("runs") / "run"
    saved = make_run(workdir, ACCURACIES, smoke_config(num_epochs=5, keep_checkpoints=2))
    assert saved == [8, 16, 24, 32, 40]
    return workdir


@pytest.fixture
def run_copy(run, tmp_path):
    return copy_run(run, tmp_path / "copy")


def _steps_on_disk(workdir):
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def test_policy_keeps_the_last_n_plus_the_best(run):
    assert _steps_on_disk(run) == [16, 32, 40]
    assert checkpoint.available_steps(run) == [16, 32, 40]


def test_save_every_n_epochs_and_at_the_end(tmp_path):
    config = smoke_config(num_epochs=5, checkpoint_every_epochs=2)
    write_config(tmp_path, config)
    with checkpoint.open_manager(tmp_path, config) as checkpoints:
        assert [checkpoint.should_save(checkpoints, e) for e in range(5)] == [False, True, False, True, True]
        assert not checkpoint.save(checkpoints, state_after(0), 0, {"test_acc": 0.5}, rngs=rngs_after(0))
        assert checkpoint.save(checkpoints, state_after(1), 1, {"test_acc": 0.5}, rngs=rngs_after(1))
        assert checkpoint.save(checkpoints, state_after(2), 2, {"test_acc": 0.5}, rngs=rngs_after(2), force=True)
    assert _steps_on_disk(tmp_path) == [16, 24]


@pytest.mark.parametrize("key, value", [("checkpoint_every_epochs", 0), ("keep_checkpoints", -1), ("keep_checkpoints", 0)])
def test_bad_checkpoint_settings(tmp_path, key, value):
    with pytest.raises(CifarJaxError, match=f"{key}=.* must be a positive integer"):
        checkpoint.open_manager(tmp_path, smoke_config(**{key: value}))


def test_resume_restores_everything_of_the_latest(run_copy):
    with checkpoint.open_manager(run_copy, smoke_config(num_epochs=5, keep_checkpoints=2)) as checkpoints:
        resume = checkpoint.restore_latest_for_resume(checkpoints, smoke_state())
    expected = state_after(4)
    assert resume.next_epoch == 5 and resume.step == 40 and int(resume.state.step) == 40
    assert_trees_equal(resume.state.params, expected.params)
    assert_trees_equal(resume.state.batch_stats, expected.batch_stats)
    # The whole optimizer state, the injected schedule's hyperparams and count included.
    assert_trees_equal(resume.state.opt_state, expected.opt_state)
    assert float(resume.state.opt_state.hyperparams["learning_rate"]) == float(expected.opt_state.hyperparams["learning_rate"])
    assert resume.state.tx is smoke_state().tx and resume.state.apply_fn is smoke_state().apply_fn
    # Keys come back as they went in: a typed key stays typed, a raw key stays raw.
    saved = rngs_after(4)
    assert jax.dtypes.issubdtype(resume.rngs["augment"].dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(jax.random.key_data(resume.rngs["augment"]), jax.random.key_data(saved["augment"]))
    np.testing.assert_array_equal(resume.rngs["data"], saved["data"])
    assert resume.data_order == {"seed": 0, "next_epoch": 5}
    assert resume.metrics == {"epoch": 4, "test_acc": 0.4, "test_loss": pytest.approx(1.6)}


def test_resume_with_no_checkpoints_is_none(tmp_path):
    with checkpoint.open_manager(tmp_path, smoke_config()) as checkpoints:
        assert checkpoint.restore_latest_for_resume(checkpoints, smoke_state()) is None


def test_best_survives_reopening_the_manager(tmp_path):
    config = smoke_config(num_epochs=6, keep_checkpoints=1)
    make_run(tmp_path, [0.9, 0.1, 0.2, 0.3, 0.4, 0.5], config, epochs=[0, 1])
    # A new process (a resumed run) reads the metrics back and still keeps the best.
    make_run(tmp_path, [0.9, 0.1, 0.2, 0.3, 0.4, 0.5], config, epochs=[2, 3, 4])
    assert _steps_on_disk(tmp_path) == [8, 40]
    assert checkpoint.checkpoint_info(tmp_path, best=True)["step"] == 8


def test_restore_gives_the_train_state_and_the_config(run, caplog):
    with caplog.at_level("INFO"):
        state, config = checkpoint.restore(run)
        checkpoint.checkpoint_info(run, best=True)
    # Quiet from Python too: no "Given directory is read only" from Orbax's read-only managers.
    assert [r.getMessage() for r in caplog.records if "read only" in r.getMessage()] == []
    assert int(state.step) == 40
    assert_trees_equal(state.params, state_after(4).params)
    assert_trees_equal(state.opt_state, state_after(4).opt_state)
    assert config.to_dict() == smoke_config(num_epochs=5, keep_checkpoints=2).to_dict()
    assert isinstance(config.mean, tuple)  # JSON lists come back as the config's tuples
    assert float(state.learning_rate) == float(state_after(4).opt_state.hyperparams["learning_rate"])


def test_restore_step_best_and_variables_only(run):
    variables, _ = checkpoint.restore(run, best=True, variables_only=True)
    assert set(variables) == {"params", "batch_stats"}
    assert_trees_equal(variables["params"], state_after(1).params)  # best: epoch 1
    state, _ = checkpoint.restore(run, step=32)
    assert_trees_equal(state.batch_stats, state_after(3).batch_stats)


def test_checkpoint_info(run):
    info = checkpoint.checkpoint_info(run)
    assert info["step"] == 40 and info["epoch"] == 4 and info["metrics"]["test_acc"] == 0.4
    assert info["class_names"] == list(CLASS_NAMES) and info["steps_per_epoch"] == 8
    params = 119_546  # configs/smoke.py's model
    # Uncompressed float32 plus Orbax's small metadata files (measured 29 kB here).
    assert params * 4 <= info["param_bytes"] <= params * 4 + 100_000


def test_no_checkpoints_missing_workdir_and_config(tmp_path):
    with pytest.raises(CifarJaxError, match="does not exist"):
        checkpoint.restore(tmp_path / "nothing")
    with pytest.raises(CifarJaxError, match="config.json is missing"):
        checkpoint.restore(tmp_path)
    write_config(tmp_path, smoke_config())
    with pytest.raises(CifarJaxError, match="no checkpoints in"):
        checkpoint.restore(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(CifarJaxError, match="no checkpoints in"):
        checkpoint.restore(tmp_path)


def test_a_step_that_does_not_exist_lists_the_available_ones(run):
    with pytest.raises(CifarJaxError, match=r"no checkpoint at step 24 .*available steps: 16, 32, 40"):
        checkpoint.restore(run, step=24)
    with pytest.raises(CifarJaxError, match="not both"):
        checkpoint.restore(run, step=16, best=True)


def test_shapes_that_do_not_match_the_config(run_copy):
    write_config(run_copy, smoke_config(num_classes=5))
    with pytest.raises(CifarJaxError) as error:
        checkpoint.restore(run_copy)
    message = str(error.value)
    assert "params/classifier/bias" in message or "params/classifier/kernel" in message
    assert "(10,)" in message and "(5,)" in message or "(128, 10)" in message and "(128, 5)" in message
    assert "\n" not in message
    # Resuming with a changed config is an error too, not "damage" to skip.
    template = checkpoint.abstract_train_state(smoke_config(width=0.5), 8)
    with checkpoint.open_manager(run_copy, smoke_config()) as checkpoints:
        with pytest.raises(CifarJaxError, match=r"params/\S+ has shape \(.*\) in the checkpoint but \(.*\) from"):
            checkpoint.restore_latest_for_resume(checkpoints, template)
    assert _steps_on_disk(run_copy) == [16, 32, 40]  # nothing moved or deleted


def _strip_layer_names(folder):
    """The step's meta as cifar_jax 0.1.0 wrote it: without "layer_names"."""
    file = folder / "meta" / "metadata"
    meta = json.loads(file.read_text())
    assert meta.pop("layer_names") == 2  # what this version writes
    file.write_text(json.dumps(meta))


def test_a_zoo_checkpoint_with_the_old_layer_names_is_refused_naming_the_version(run_copy):
    """Checkpoints of cifar_jax 0.1.0 and earlier (no "layer_names" in the meta): a ResNet9
    one restores (its tree did not change); one of a zoo model whose layers 0.2.0 renamed is
    refused in one line that names the version to read it with, when restored or resumed."""
    for step in (16, 32, 40):
        _strip_layer_names(step_dir(run_copy, step))
    state, _ = checkpoint.restore(run_copy)
    assert int(state.step) == 40
    config = smoke_config(model="resnet18", num_epochs=5, keep_checkpoints=2)
    write_config(run_copy, config)
    with pytest.raises(checkpoint.ForeignCheckpoint) as error:
        checkpoint.restore(run_copy)
    message = str(error.value)
    assert "\n" not in message and message.startswith("checkpoint step 40 (")
    assert "written by cifar_jax 0.1.0 or earlier, whose resnet18 had other layer names" in message
    assert "pip install cifar-jax==0.1.0" in message and "retrain" in message
    with checkpoint.open_manager(run_copy, config) as checkpoints:
        with pytest.raises(checkpoint.ForeignCheckpoint, match="checkpoint step 40 .* cifar_jax 0.1.0 or earlier"):
            checkpoint.restore_latest_for_resume(checkpoints, checkpoint.abstract_train_state(config, 8))
    assert _steps_on_disk(run_copy) == [16, 32, 40]  # nothing moved or deleted


DAMAGE = {
    "truncated array file": lambda folder: truncate(biggest_file(folder / "params")),
    "deleted array file": lambda folder: biggest_file(folder / "train" / "ocdbt.process_0" / "d").unlink(),
    "missing params metadata": lambda folder: (folder / "params" / "_METADATA").unlink(),
    "missing meta item": lambda folder: shutil.rmtree(folder / "meta"),
    "empty meta file": lambda folder: os.truncate(next((folder / "meta").iterdir()), 0),
    "missing train item": lambda folder: shutil.rmtree(folder / "train"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_resume_skips_a_damaged_latest_with_a_warning(run_copy, damage):
    DAMAGE[damage](step_dir(run_copy, 40))
    config = smoke_config(num_epochs=5, keep_checkpoints=2)
    with checkpoint.open_manager(run_copy, config) as checkpoints:
        with pytest.warns(checkpoint.CheckpointWarning, match=r"damaged checkpoint step 40 \(.+\).*resuming from step 32"):
            resume = checkpoint.restore_latest_for_resume(checkpoints, smoke_state())
        assert resume.step == 32 and resume.next_epoch == 4
        assert_trees_equal(resume.state.params, state_after(3).params)
        # Moved aside (kept for inspection), so the resumed run can save step 40 again.
        assert (run_copy / "checkpoints_damaged" / "40").is_dir()
        assert checkpoint.save(checkpoints, state_after(4), 4, {"test_acc": 0.4}, rngs=rngs_after(4))
    state, _ = checkpoint.restore(run_copy)
    assert int(state.step) == 40


@pytest.mark.parametrize("damage", ["truncated array file", "missing params metadata", "missing meta item"])
def test_restoring_a_damaged_step_is_refused(run_copy, damage):
    DAMAGE[damage](step_dir(run_copy, 40))
    with pytest.raises(CifarJaxError, match=r"checkpoint step 40 .* is damaged: .*pass --step with another one \(16, 32\)") as error:
        checkpoint.restore(run_copy)
    assert "\n" not in str(error.value) and len(str(error.value)) < 600
    assert _steps_on_disk(run_copy) == [16, 32, 40]  # refusing moves nothing


def test_every_checkpoint_damaged_is_an_error(run_copy):
    for step in (16, 32, 40):
        (step_dir(run_copy, step) / "params" / "_METADATA").unlink()
    with checkpoint.open_manager(run_copy, smoke_config()) as checkpoints:
        with pytest.raises(CifarJaxError, match="every checkpoint .* is damaged"):
            checkpoint.restore_latest_for_resume(checkpoints, smoke_state())
    assert _steps_on_disk(run_copy) == [16, 32, 40]


def test_leftovers_of_interrupted_saves_never_look_complete(run_copy):
    checkpoints_dir = run_copy / "checkpoints"
    # A save that was cut off after writing everything but the final rename, and one cut
    # off early: Orbax writes into <step>.orbax-checkpoint-tmp (some versions add
    # -<timestamp>) and renames it to <step> at the end.
    shutil.copytree(checkpoints_dir / "40", checkpoints_dir / "48.orbax-checkpoint-tmp")
    partial = checkpoints_dir / "56.orbax-checkpoint-tmp-1700000001"
    shutil.copytree(checkpoints_dir / "40" / "params", partial / "params")
    assert checkpoint.available_steps(run_copy) == [16, 32, 40]
    state, _ = checkpoint.restore(run_copy)
    assert int(state.step) == 40
    with checkpoint.open_manager(run_copy, smoke_config(num_epochs=5, keep_checkpoints=2)) as checkpoints:
        assert checkpoint.restore_latest_for_resume(checkpoints, smoke_state()).step == 40
        # Orbax deletes the leftovers in the background, finishing before the first save.
        assert checkpoint.save(checkpoints, state_after(5), 5, {"test_acc": 0.5}, rngs=rngs_after(5))
    assert not any("tmp" in p.name for p in checkpoints_dir.iterdir())
    state, _ = checkpoint.restore(run_copy)
    assert_trees_equal(state.params, state_after(5).params)


_KILLED_SAVE = textwrap.dedent("""
    import sys, time
    from cifar_jax import checkpoint
    from cifar_jax.checkpoint import manager
    from tests.checkpoint_runs import rngs_after, smoke_config, state_after
    checkpoints = checkpoint.open_manager(sys.argv[1], smoke_config(num_epochs=3))
    checkpoint.save(checkpoints, state_after(0), 0, {"test_acc": 0.1}, rngs=rngs_after(0))
    checkpoint.wait(checkpoints)

    def stuck(tree):  # the meta item's commit, in Orbax's background: hold the save open
        print("writing", flush=True)
        time.sleep(600)

    manager.digest = stuck
    checkpoint.save(checkpoints, state_after(1), 1, {"test_acc": 0.2}, rngs=rngs_after(1))
    time.sleep(600)
""")


def test_a_killed_save_leaves_no_complete_looking_checkpoint(tmp_path):
    """SIGKILL while Orbax's temporary folder of step 16 exists (its arrays written or
    being written, its meta not): that folder is never taken for a checkpoint, and the
    run resumes from step 8 and can save step 16 again."""
    config = smoke_config(num_epochs=3)
    write_config(tmp_path, config)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    child = subprocess.Popen([sys.executable, "-c", _KILLED_SAVE, str(tmp_path)], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        folder = tmp_path / "checkpoints"
        partial = list(folder.glob("16.orbax-checkpoint-tmp*"))
    finally:
        child.send_signal(signal.SIGKILL)
        _, err = child.communicate(timeout=60)
    assert line == "writing\n", err[-3000:]
    assert len(partial) == 1 and partial[0].is_dir()
    assert sorted(p.name for p in folder.iterdir()) == sorted(["8", partial[0].name])  # as the kill left it
    assert checkpoint.available_steps(tmp_path) == [8]
    assert checkpoint.checkpoint_info(tmp_path)["step"] == 8
    with checkpoint.open_manager(tmp_path, config) as checkpoints:
        assert checkpoint.restore_latest_for_resume(checkpoints, smoke_state()).step == 8
        assert checkpoint.save(checkpoints, state_after(1), 1, {"test_acc": 0.2}, rngs=rngs_after(1))
    assert sorted(p.name for p in folder.iterdir()) == ["16", "8"]  # the leftover is gone
    state, _ = checkpoint.restore(tmp_path)
    assert_trees_equal(state.params, state_after(1).params)


def test_the_state_may_be_donated_while_the_save_runs(tmp_path):
    config = smoke_config(num_epochs=3)
    write_config(tmp_path, config)
    state = state_after(2)
    expected = jax.device_get(state.params)
    clobber = jax.jit(lambda params: jax.tree.map(lambda x: x * 0 - 1, params), donate_argnums=0)
    with checkpoint.open_manager(tmp_path, config) as checkpoints:
        checkpoint.save(checkpoints, state, 2, {"test_acc": 0.5}, rngs=rngs_after(2))
        jax.block_until_ready(clobber(state.params))  # as the next train step would
    variables, _ = checkpoint.restore(tmp_path, variables_only=True)
    assert_trees_equal(variables["params"], expected)


def test_config_json_of_an_older_run_gets_the_checkpoint_defaults(tmp_path):
    values = smoke_config().to_dict()
    del values["checkpoint_every_epochs"], values["keep_checkpoints"]
    (tmp_path / "config.json").write_text(json.dumps(values))
    config = checkpoint.load_run_config(tmp_path)
    assert config.checkpoint_every_epochs == 1 and config.keep_checkpoints == 3
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CifarJaxError, match="not readable JSON"):
        checkpoint.load_run_config(tmp_path)


def test_default_config_has_the_checkpoint_keys():
    from cifar_jax.config import load_config_file

    config = load_config_file(str(REPO / "configs" / "default.py"))
    assert config.checkpoint_every_epochs == 1 and config.keep_checkpoints == 3
    assert checkpoint.checkpoint_settings(config) == (1, 3)


def test_an_error_of_a_background_save_is_raised_by_the_next_call(tmp_path, monkeypatch):
    config = smoke_config(num_epochs=3)
    write_config(tmp_path, config)
    checkpoints = checkpoint.open_manager(tmp_path, config)

    def broken_digest(tree):  # runs in Orbax's background commit of the meta item
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.manager, "digest", broken_digest)
    assert checkpoint.save(checkpoints, state_after(0), 0, {"test_acc": 0.5}, rngs=rngs_after(0))
    with pytest.raises(OSError, match="disk full"):
        checkpoint.close(checkpoints)


def test_readme_restore_example_runs(run, capsys):
    import re

    page = (REPO / "docs" / "evaluate.md").read_text()
    block = re.search(r"<!-- example-restore -->\s*```python\n(.*?)```", page, re.S)
    assert block, "docs/evaluate.md lost its restore example"
    code = block.group(1).replace('"runs/seed"', repr(str(run)))
    exec(compile(code, "docs/evaluate.md restore example", "exec"), {})
    assert capsys.readouterr().out.split() == ["40", "5", "0.9"]
