"""Damaged checkpoint folders beyond tests/test_checkpoint.py's DAMAGE, checkpoints of
another config in a run's folder, and a disk that fills up while a checkpoint is written."""
import contextlib
import json
import os
import shutil

import numpy as np
import pytest

from cifar_jax import checkpoint
from cifar_jax.checkpoint.layout import ARRAY_ITEMS
from cifar_jax.checkpoint.restoring import meta_problem
from cifar_jax.errors import CifarJaxError
from tests.checkpoint_runs import (
    assert_trees_equal,
    biggest_file,
    copy_run,
    make_run,
    rngs_after,
    smoke_config,
    smoke_state,
    state_after,
    step_dir,
    write_config,
)
from tests.disks import tiny_disk



@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("runs") / "run"
    make_run(workdir, [0.1, 0.9, 0.2, 0.3, 0.4], smoke_config(num_epochs=5, keep_checkpoints=2))
    return workdir  # steps 16 (best), 32, 40


def _garbage(path):
    path.write_bytes(np.random.default_rng(0).integers(0, 256, path.stat().st_size, np.uint8).tobytes())


def _array_data_file(folder):
    return biggest_file(folder / "params" / "ocdbt.process_0" / "d")


def _edit_meta(folder, edit):
    file = folder / "meta" / "metadata"
    meta = json.loads(file.read_text())
    edit(meta)
    file.write_text(json.dumps(meta))


DAMAGE = {
    "garbage array file": lambda folder: _garbage(_array_data_file(folder)),
    "empty array file": lambda folder: os.truncate(_array_data_file(folder), 0),
    "garbage params metadata": lambda folder: (folder / "params" / "_METADATA").write_bytes(b"\x89garbage{"),
    "garbage meta json": lambda folder: next((folder / "meta").glob("metadata")).write_text('{"epoch": '),
    "emptied params item": lambda folder: [shutil.rmtree(p) if p.is_dir() else p.unlink()
                                           for p in (folder / "params").iterdir()],
    # Without its checksums, altered weights would pass: a checkpoint of this format has them.
    "meta without checksums, weights altered": lambda folder: (
        _edit_meta(folder, lambda meta: meta.pop("checksums")), _garbage(_array_data_file(folder))),
    "meta epoch null": lambda folder: _edit_meta(folder, lambda meta: meta.update(epoch=None)),
    "meta data_order a string": lambda folder: _edit_meta(folder, lambda meta: meta.update(data_order="x")),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_resume_skips_it_and_restore_refuses_it(run, tmp_path, damage):
    workdir = copy_run(run, tmp_path / "copy")
    DAMAGE[damage](step_dir(workdir, 40))
    with pytest.raises(CifarJaxError, match=r"checkpoint step 40 .* is damaged: .*pass --step with another one") as error:
        checkpoint.restore(workdir)
    assert "\n" not in str(error.value)
    config = smoke_config(num_epochs=5, keep_checkpoints=2)
    with checkpoint.open_manager(workdir, config) as checkpoints:
        with pytest.warns(checkpoint.CheckpointWarning, match=r"damaged checkpoint step 40 \(.+\).*resuming from step 32"):
            resume = checkpoint.restore_latest_for_resume(checkpoints, smoke_state())
    assert resume.step == 32
    assert_trees_equal(resume.state.params, state_after(3).params)


def test_resume_skips_rng_keys_of_an_unknown_implementation(run, tmp_path):
    workdir = copy_run(run, tmp_path / "copy")
    _edit_meta(step_dir(workdir, 40), lambda meta: meta.update(rng_impls={"augment": "bogus", "data": "bogus"}))
    with checkpoint.open_manager(workdir, smoke_config(num_epochs=5, keep_checkpoints=2)) as checkpoints:
        with pytest.warns(checkpoint.CheckpointWarning, match=r"step 40 \(its RNG keys do not fit .*bogus"):
            resume = checkpoint.restore_latest_for_resume(checkpoints, smoke_state())
    assert resume.step == 32


def test_the_meta_schema_names_what_is_wrong():
    good = {"format": 1, "epoch": 3, "next_epoch": 4, "step": 40, "steps_per_epoch": 10, "metrics": {},
            "data_order": {"seed": 0}, "rng_impls": {"augment": "threefry2x32"}, "image_shape": [32, 32, 3],
            "class_names": None, "config": {}, "checksums": {item: "ab" * 32 for item in ARRAY_ITEMS}}
    assert meta_problem(good) is None
    cases = [("epoch", None, "has epoch null, not an integer >= 0"),
             ("step", True, "has step true, not an integer >= 0"),
             ("data_order", "x", 'has data_order "x", not an object'),
             ("steps_per_epoch", 0, "has steps_per_epoch 0, not null or an integer >= 1"),
             ("class_names", [1, 2], "has class_names [1, 2], not null or a list of names"),
             ("rng_impls", {"augment": 7}, "has rng_impls"),
             ("checksums", {"params": "ab" * 32}, "has checksums"),  # one item's digest is not enough
             ("checksums", {item: "not hex" for item in ARRAY_ITEMS}, "has checksums")]
    for key, value, expected in cases:
        assert expected in meta_problem({**good, key: value}), (key, value)
    assert meta_problem({k: v for k, v in good.items() if k != "checksums"}) == "lacks checksums"
    assert meta_problem([1]) == "is a list, not an object"


HARMLESS_OR_DAMAGE = {
    "removed _CHECKPOINT_METADATA": lambda folder: (folder / "_CHECKPOINT_METADATA").unlink(),
    "removed per-process ocdbt manifest": lambda folder: (
        folder / "params" / "ocdbt.process_0" / "manifest.ocdbt").unlink(),
    "removed top-level ocdbt manifest": lambda folder: (folder / "params" / "manifest.ocdbt").unlink(),
    "garbage per-process ocdbt manifest": lambda folder: _garbage(
        folder / "params" / "ocdbt.process_0" / "manifest.ocdbt"),
    "garbage top-level ocdbt manifest": lambda folder: _garbage(folder / "params" / "manifest.ocdbt"),
    "removed commit_success.txt": lambda folder: (folder / "commit_success.txt").unlink(missing_ok=True),
    "removed array_metadatas": lambda folder: shutil.rmtree(folder / "params" / "array_metadatas"),
}


@pytest.mark.parametrize("damage", HARMLESS_OR_DAMAGE)
def test_other_removals_are_refused_or_restore_exactly(run, tmp_path, damage):
    """Files Orbax can do without: the step either restores exactly (checked against the
    saved checksums) or is refused as damaged; it never restores wrong values."""
    workdir = copy_run(run, tmp_path / "copy")
    HARMLESS_OR_DAMAGE[damage](step_dir(workdir, 40))
    try:
        state, _ = checkpoint.restore(workdir)
    except CifarJaxError as error:
        assert "checkpoint step 40" in str(error) and "is damaged" in str(error)
    else:
        assert int(state.step) == 40
        assert_trees_equal(state.params, state_after(4).params)


# ----------------------------------------------------------------------------- disk full


def test_a_full_disk_while_saving_is_one_clear_error_and_leaves_no_partial_checkpoint(tmp_path):
    """A real ENOSPC: a 2 MiB tmpfs holds one smoke checkpoint (1.6 MB) but not two."""
    with tiny_disk(tmp_path / "disk", "2m") as disk:
        config = smoke_config(num_epochs=3)
        write_config(disk, config)
        checkpoints = checkpoint.open_manager(disk, config)
        try:
            assert checkpoint.save(checkpoints, state_after(0), 0, {"test_acc": 0.1}, rngs=rngs_after(0))
            checkpoint.wait(checkpoints)
            checkpoint.save(checkpoints, state_after(1), 1, {"test_acc": 0.2}, rngs=rngs_after(1))
            with pytest.raises(checkpoint.CheckpointWriteError) as error:
                checkpoint.wait(checkpoints)
        finally:
            with contextlib.suppress(Exception):
                checkpoint.close(checkpoints)
        message = str(error.value)
        assert "\n" not in message and len(message) < 800
        assert "could not write checkpoint step 16" in message
        assert "earlier checkpoints are untouched (8)" in message
        assert isinstance(error.value, CifarJaxError)
        # No half-written checkpoint: only step 8, complete, and no temporary folder.
        assert sorted(p.name for p in (disk / "checkpoints").iterdir()) == ["8"]
        assert checkpoint.available_steps(disk) == [8]
        state, _ = checkpoint.restore(disk)
        assert_trees_equal(state.params, state_after(0).params)


def test_a_write_error_from_orbax_becomes_one_line(tmp_path, monkeypatch):
    """Where no tmpfs can be mounted: the same path, with Orbax's background write raising
    ENOSPC after it made its temporary folder."""
    import errno

    config = smoke_config(num_epochs=3)
    write_config(tmp_path, config)
    checkpoints = checkpoint.open_manager(tmp_path, config)

    def full_disk(tree):  # runs in Orbax's background commit of the meta item
        assert list(checkpoints.directory.glob("8.orbax-checkpoint-tmp*"))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.manager, "digest", full_disk)
    assert checkpoint.save(checkpoints, state_after(0), 0, {"test_acc": 0.5}, rngs=rngs_after(0))
    with pytest.raises(checkpoint.CheckpointWriteError, match=r"could not write checkpoint step 8 .*No space left on device.*removed the partial write"):
        checkpoint.close(checkpoints)
    assert not any(checkpoints.directory.iterdir())


# ----------------------------------------------------------------------------- other configs


def _five_class_state(epoch):
    """state_after(epoch) of a 5-class model: the classifier (and its Adam moments) cut
    to 5 outputs on the host, so nothing is compiled."""
    import jax
    import jax.numpy as jnp

    def cut(path, x):
        name = jax.tree_util.keystr(path)
        return jnp.asarray(np.asarray(x)[..., :5]) if "classifier" in name and x.shape[-1:] == (10,) else x

    state = state_after(epoch)
    return state.replace(params=jax.tree_util.tree_map_with_path(cut, state.params),
                         opt_state=jax.tree_util.tree_map_with_path(cut, state.opt_state))


def _plant(workdir, tmp_path, state, config, epoch):
    """Replaces workdir's checkpoint of `epoch` by one of `state` saved under `config`."""
    other = tmp_path / "other"
    write_config(other, config)
    with checkpoint.open_manager(other, config) as checkpoints:
        assert checkpoint.save(checkpoints, state, epoch, {"test_acc": 0.99}, rngs=rngs_after(epoch))
    step = (epoch + 1) * 8
    shutil.rmtree(step_dir(workdir, step))
    shutil.copytree(step_dir(other, step), step_dir(workdir, step))


OTHER_CONFIGS = {
    # other shapes: caught by comparing them with the run's model
    "another model": (lambda: _five_class_state(4), dict(num_classes=5),
                      r"params/classifier/\w+ has shape \(.*5,?\), not \(.*10,?\)"),
    # same shapes, other training: caught by the config each checkpoint records
    "another learning rate": (lambda: state_after(4), dict(learning_rate=0.5),
                              r"written with another config: learning_rate=0.5"),
}


@pytest.mark.parametrize("case", OTHER_CONFIGS)
def test_resume_skips_a_checkpoint_of_another_config(run, tmp_path, case):
    make_state, overrides, reason = OTHER_CONFIGS[case]
    workdir = copy_run(run, tmp_path / "copy")
    config = smoke_config(num_epochs=5, keep_checkpoints=2)
    _plant(workdir, tmp_path, make_state(), smoke_config(num_epochs=5, keep_checkpoints=2, **overrides), 4)
    with checkpoint.open_manager(workdir, config) as checkpoints:
        with pytest.warns(checkpoint.CheckpointWarning,
                          match=rf"skipping checkpoint step 40 \({reason}\); moved it to .*resuming from step 32"):
            resume = checkpoint.restore_latest_for_resume(checkpoints, smoke_state())
        assert resume.step == 32
        assert_trees_equal(resume.state.params, state_after(3).params)
        assert (workdir / "checkpoints_other_config" / "40").is_dir()
        assert checkpoint.save(checkpoints, state_after(4), 4, {"test_acc": 0.4}, rngs=rngs_after(4))
    state, _ = checkpoint.restore(workdir)
    assert_trees_equal(state.params, state_after(4).params)


def test_evaluate_refuses_a_checkpoint_of_another_model(run, tmp_path):
    workdir = copy_run(run, tmp_path / "copy")
    _plant(workdir, tmp_path, _five_class_state(4), smoke_config(num_epochs=5, num_classes=5), 4)
    with pytest.raises(CifarJaxError, match=r"^checkpoint step 40 does not match the config in .*config.json: "
                                            r"params/classifier/\w+ has shape") as error:
        checkpoint.restore(workdir)
    assert "\n" not in str(error.value)
    state, _ = checkpoint.restore(workdir, step=32)  # the run's own checkpoints still restore
    assert_trees_equal(state.params, state_after(3).params)


def test_when_no_checkpoint_is_usable_nothing_is_moved(run, tmp_path):
    workdir = copy_run(run, tmp_path / "copy")
    DAMAGE["garbage meta json"](step_dir(workdir, 16))
    config = smoke_config(num_epochs=5, keep_checkpoints=2, learning_rate=0.5)  # differs from all three
    with checkpoint.open_manager(workdir, config) as checkpoints:
        with pytest.raises(CifarJaxError, match=r"no usable checkpoint in .*step 40: written with another config: "
                                                r"learning_rate=0.01.*step 16: damaged, meta item unreadable"):
            checkpoint.restore_latest_for_resume(checkpoints, smoke_state())
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["16", "32", "40"]
    assert not (workdir / "checkpoints_other_config").exists() and not (workdir / "checkpoints_damaged").exists()


def test_after_a_failed_orbax_read_only_orbax_leftovers_are_silenced(monkeypatch):
    """quiet_abandoned_io's filters (what a failed Orbax read abandons prints nothing; see
    test_evaluate's truncated-checkpoint test for the real case) drop just those reports."""
    import logging
    import sys
    import types
    import warnings

    from cifar_jax.checkpoint import layout

    passed = []
    monkeypatch.setattr(layout, "_quieted", False)
    monkeypatch.setattr(sys, "unraisablehook", passed.append)
    asyncio_log = logging.getLogger("asyncio")
    monkeypatch.setattr(asyncio_log, "filters", list(asyncio_log.filters))
    with warnings.catch_warnings():
        layout.quiet_abandoned_io()

    def raised_in(filename):
        try:
            exec(compile("raise ValueError('read failed')", filename, "exec"))
        except ValueError as error:
            return error

    from_orbax = raised_in(os.path.join(os.sep, "site-packages", "orbax", "checkpoint", "io.py"))
    chained = RuntimeError("wrapped")
    chained.__cause__ = from_orbax
    orbax_coroutine = types.SimpleNamespace(cr_code=compile("", f"{os.sep}orbax{os.sep}x.py", "exec"))
    dropped = [types.SimpleNamespace(exc_value=RuntimeError("Event loop is closed"), object=None),
               types.SimpleNamespace(exc_value=from_orbax, object=None),
               types.SimpleNamespace(exc_value=chained, object=None),
               types.SimpleNamespace(exc_value=ValueError("x"), object=orbax_coroutine)]
    kept = types.SimpleNamespace(exc_value=raised_in(__file__), object=None)
    for unraisable in [*dropped, kept]:
        sys.unraisablehook(unraisable)
    assert passed == [kept]

    def record(message, error=None):
        info = (type(error), error, error.__traceback__) if error else None
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, message, None, info)

    assert not asyncio_log.filter(record("Task exception was never retrieved", from_orbax))
    assert not asyncio_log.filter(record(f"Task was destroyed but it is pending! coro={os.sep}orbax{os.sep}"))
    assert asyncio_log.filter(record("Task exception was never retrieved", raised_in(__file__)))
    assert asyncio_log.filter(record("anything else"))
