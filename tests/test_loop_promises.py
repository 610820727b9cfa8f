"""Promises of the training loop that only an end-to-end run shows: a padded, masked last
batch; the scanned multi-step call (what every GPU run takes: on CPU, scan_length is 1);
resuming with a changed resumable key; bfloat16 compute with float32 state; the
compilation cache setting; batch sizes that must split over the devices.

Sizes: configs/smoke.py as it is (width 0.125, batch 32; 250 train / 125 test examples,
neither a multiple of its batch sizes; three epochs of 8 steps): the run of one step per
call is the suite's shared smoke run (tests/conftest.py), so its compiled steps serve here
and in every other smoke run of the suite."""
import json
import os
import shutil
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar_jax import multistep
from cifar_jax.config import load_config_file, parse_command_line
from cifar_jax.data import load_dataset
from cifar_jax.errors import ConfigError
from cifar_jax.steps import create_model, eval_step, train_step
from cifar_jax.train import enable_compilation_cache, train_and_evaluate
from tests.checkpoint_runs import smoke_state, step_dir
from tests.conftest import REPO, TrainStepsSpy

TIMING = ("train_seconds", "epoch_seconds")
SMOKE = str(REPO / "configs" / "smoke.py")


def _config(**overrides):
    config = load_config_file(SMOKE)
    config.update(overrides)
    return config


def _records(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def _train(workdir, config, scan=False):
    spy = TrainStepsSpy(multistep.train_steps)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(multistep, "train_steps", spy)
        if scan:  # what scan_length answers on a GPU: several steps per compiled call
            patch.setattr(multistep, "scan_length", lambda steps, calls: multistep.steps_per_call(steps, calls))
        state = train_and_evaluate(config, str(workdir))
    return jax.device_get(state), spy.calls


@pytest.fixture(scope="module")
def padded(smoke_run):
    return smoke_run.workdir, smoke_run.state, smoke_run.calls


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    """Two steps per call: the scanned call tests/test_steps.py compiles too."""
    workdir = tmp_path_factory.mktemp("scanned") / "run"
    state, calls = _train(workdir, _config(progress_updates=4), scan=True)
    return workdir, state, calls


def test_a_padded_masked_last_batch_inside_the_loop(padded):
    workdir, state, calls = padded
    records = _records(workdir)
    assert [r["step"] for r in records] == [8, 16, 24] and int(state.step) == 24
    # 250 = 7 x 32 + 26: every call has the full batch shape; the last batch has 26 real.
    assert [c["shape"] for c in calls] == [(1, 32)] * 24
    assert [c["metrics"]["count"].tolist() for c in calls] == ([[32]] * 7 + [[26]]) * 3
    for epoch, record in enumerate(records):
        epoch_calls = calls[8 * epoch: 8 * epoch + 8]
        count = np.concatenate([c["metrics"]["count"] for c in epoch_calls]).astype(np.float64)
        for key, name in (("loss", "train_loss"), ("accuracy", "train_acc")):
            values = np.concatenate([c["metrics"][key] for c in epoch_calls]).astype(np.float64)
            assert record[name] == pytest.approx(np.sum(values * count) / 250, rel=1e-9), name
        # Means over the 125 real test examples (batches of 64, the last with 61 real): a
        # whole number of 125ths, up to the float32 rounding of each batch's mean (measured
        # 3e-6 of an example); counting the padding would leave it off by up to half of one.
        assert record["test_acc"] * 125 == pytest.approx(round(record["test_acc"] * 125), abs=1e-3)
    # The last epoch's test metrics are the model's on the 125 test images, padding unseen.
    data = load_dataset(_config())
    expected = eval_step(state, {"image": data.test_images, "label": data.test_labels})
    assert records[-1]["test_loss"] == pytest.approx(float(expected["loss"]), rel=1e-5)
    assert records[-1]["test_acc"] == pytest.approx(float(expected["accuracy"]), abs=1.01 / 125)


def test_the_scanned_multi_step_call_inside_the_loop(padded, scanned):
    """Two steps per compiled call (lax.scan) and a scanned evaluation train like one step
    per call: the same steps, counts and learning rates, and metrics within float32 drift;
    each epoch's new order reuses the one compiled call."""
    workdir, state, calls = scanned
    assert [c["shape"] for c in calls] == [(2, 32)] * 12
    assert [c["metrics"]["count"].tolist() for c in calls] == [[32] * 2, [32] * 2, [32] * 2, [32, 26]] * 3
    # The first step of the run, from the same initial state on the same batch: equal to
    # float32 ulps (the scan body and the lone step are different XLA programs).
    one_step_losses = np.concatenate([c["metrics"]["loss"] for c in padded[2]])
    losses = np.concatenate([c["metrics"]["loss"] for c in calls])
    np.testing.assert_allclose(losses[0], one_step_losses[0], rtol=1e-5)
    one_step = _records(padded[0])
    records = _records(workdir)
    assert [r["step"] for r in records] == [r["step"] for r in one_step] == [8, 16, 24]
    for a, b in zip(records, one_step):
        assert a["last_lr"] == pytest.approx(b["last_lr"], rel=1e-6)
    # After that, rounding differences grow through Adam's steps. Measured (jax 0.10.2, AMD
    # EPYC, 2026-12-04), scanned against one step per call: epoch 0 train_loss 9.4e-5
    # relative, test_loss 2.5e-3, train_acc equal, test_acc 1 of 125 apart; around the
    # schedule's peak (lr 1e-2, epoch 1) the two float32 runs part: train_loss 1.9e-2, test_loss
    # 0.16 relative, test_acc 5 of 125. So epoch 0 is held tight (bounds 5x the measured; a
    # step on a wrong batch or key changes that step's loss by 6e-2, tests/test_steps.py) and
    # the later epochs loosely (a state not carried from call to call would stay near
    # chance, a loss of ln 10 = 2.30, where these runs reach 1.2 and 0.7).
    a, b = records[0], one_step[0]
    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=5e-4)
    assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1.5e-2)
    assert a["train_acc"] == pytest.approx(b["train_acc"], abs=2.01 / 250)
    assert a["test_acc"] == pytest.approx(b["test_acc"], abs=5.01 / 125)
    for a, b in zip(records[1:], one_step[1:]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=0.1)


def test_resume_with_changed_resumable_keys(padded, tmp_path, capsys):
    """eval_batch_size and progress_updates change how a run is evaluated and reported, not
    what it trains: a run resumes with new values and ends like the run it continues."""
    source, straight, _ = padded
    workdir = tmp_path / "run"
    shutil.copytree(source, workdir)
    shutil.rmtree(step_dir(workdir, 24))  # as if it had stopped after epoch 1
    capsys.readouterr()
    state = jax.device_get(train_and_evaluate(_config(eval_batch_size=50, progress_updates=4), str(workdir)))
    assert "Resuming after epoch 1 (step 16)" in capsys.readouterr().out
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["eval_batch_size"] == 50 and saved["progress_updates"] == 4
    a, b = _records(workdir), _records(source)
    assert [r["epoch"] for r in a] == [0, 1, 2]
    for x, y in zip(a, b):
        # Training is the same program on the same data: bit for bit.
        assert {k: v for k, v in x.items() if not k.startswith("test_")} == {
            k: v for k, v in y.items() if not k.startswith("test_")}
        # Evaluation in batches of 50 instead of 64 sums in another order.
        assert x["test_loss"] == pytest.approx(y["test_loss"], rel=1e-5)
        assert x["test_acc"] == pytest.approx(y["test_acc"], abs=1.01 / 125)
    for x, y in zip(jax.tree.leaves((state.params, state.batch_stats, state.opt_state)),
                    jax.tree.leaves((straight.params, straight.batch_stats, straight.opt_state))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_bfloat16_compute_keeps_params_statistics_and_logits_float32(tmp_path):
    config, _ = parse_command_line(["--config", SMOKE, "--workdir", str(tmp_path), "--config.dtype=bfloat16"])
    assert config.dtype == "bfloat16"
    # The smoke state's float32 weights, run by the bfloat16 model (same parameter tree).
    float32 = smoke_state()
    state = float32.replace(apply_fn=create_model(config).apply)
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8))
    batch = {"image": images, "label": jnp.arange(8) % 10}
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    x = images.astype(jnp.float32) / 255.0

    def forward(apply_fn):
        return jax.jit(lambda v, x: apply_fn(v, x, train=False))

    # The convolutions compute in bfloat16 ...
    jaxpr = str(jax.make_jaxpr(lambda v, x: state.apply_fn(v, x, train=False))(variables, x))
    assert "conv_general_dilated" in jaxpr and "bf16" in jaxpr
    # ... and the logits come back as float32, close to the float32 model's but not equal.
    logits = forward(state.apply_fn)(variables, x)
    reference = forward(float32.apply_fn)(variables, x)
    assert logits.dtype == jnp.float32
    scale = float(jnp.abs(reference).max())
    assert 0 < float(jnp.abs(logits - reference).max()) < 0.1 * scale
    # A train step keeps weights, BatchNorm statistics and the optimizer state in float32
    # (its output types, traced: the forward above ran in bfloat16 already).
    new, metrics = jax.eval_shape(train_step, state, batch, jax.random.key(0))
    for tree in (new.params, new.batch_stats):
        assert {leaf.dtype for leaf in jax.tree.leaves(tree)} == {jnp.dtype(jnp.float32)}
    floats = [leaf for leaf in jax.tree.leaves(new.opt_state) if jnp.issubdtype(leaf.dtype, jnp.floating)]
    assert floats and all(leaf.dtype == jnp.float32 for leaf in floats)
    assert metrics["loss"].dtype == jnp.float32
    # The training forward (run: one small program, not the whole step) updates the float32
    # BatchNorm statistics from bfloat16 activations, finite.
    logits, updates = jax.jit(lambda v, x: state.apply_fn(v, x, train=True, mutable=["batch_stats"]))(variables, x)
    assert logits.dtype == jnp.float32 and np.isfinite(np.asarray(logits)).all()
    moved = jax.tree.leaves(updates["batch_stats"])
    assert {leaf.dtype for leaf in moved} == {jnp.dtype(jnp.float32)} and all(np.isfinite(leaf).all() for leaf in moved)
    assert any(not np.array_equal(a, b) for a, b in zip(moved, jax.tree.leaves(state.batch_stats)))


def test_check_divisible():
    multistep.check_divisible(63, None, "batch_size")  # one device: anything goes
    multistep.check_divisible(64, types.SimpleNamespace(size=4), "batch_size")
    with pytest.raises(ConfigError) as error:
        multistep.check_divisible(130, types.SimpleNamespace(size=4), "eval_batch_size")
    assert str(error.value) == ("eval_batch_size=130 does not split evenly over 4 devices; "
                                "set --config.eval_batch_size to a multiple of 4")


_CACHE_SCRIPT = """
import sys, jax, jax.numpy as jnp
from cifar_jax.train import enable_compilation_cache
enable_compilation_cache(sys.argv[1])
print(jax.config.jax_compilation_cache_dir)
jax.jit(lambda x: x * 3 + 1)(jnp.arange(5.0)).block_until_ready()
"""


def _cache_dir_of(xla_cache_dir, home, env_dir=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env.update(HOME=str(home), PYTHONPATH=str(REPO), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    if env_dir is not None:
        env["JAX_COMPILATION_CACHE_DIR"] = str(env_dir)
    result = subprocess.run([sys.executable, "-c", _CACHE_SCRIPT, xla_cache_dir], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip().splitlines()[-1]


def test_xla_cache_dir_and_jax_compilation_cache_dir(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    # config.xla_cache_dir (default "~/.cache/cifar_jax/xla"): ~ is the user's home, and
    # compiled programs land there.
    assert _cache_dir_of("~/xla", home) == str(home / "xla")
    assert any((home / "xla").iterdir())
    # JAX_COMPILATION_CACHE_DIR (or JAX's own config) wins over it.
    env_dir = tmp_path / "from_env"
    assert _cache_dir_of("~/other", home, env_dir) == str(env_dir)
    assert any(env_dir.iterdir()) and not (home / "other").exists()


def test_an_empty_xla_cache_dir_turns_the_cache_off():
    before = jax.config.jax_compilation_cache_dir
    try:
        jax.config.update("jax_compilation_cache_dir", None)
        enable_compilation_cache("")
        assert jax.config.jax_compilation_cache_dir is None
    finally:
        jax.config.update("jax_compilation_cache_dir", before)


def test_the_suite_runs_on_one_cpu_device():
    """tests/conftest.py forces this whatever the shell exports (JAX_PLATFORMS=cuda, XLA_FLAGS
    forcing several host devices): the numbers asserted everywhere are one CPU device's."""
    assert jax.default_backend() == "cpu" and jax.device_count() == 1
    assert "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", "")
    assert "JAX_NUM_PROCESSES" not in os.environ
