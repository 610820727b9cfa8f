import io
import json
import os
import shlex
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from cifar_jax.config import load_config_file
from cifar_jax.optim import one_cycle_schedules
from cifar_jax import multistep
from cifar_jax.train import main
from tests.conftest import REPO


def test_epoch_order_is_a_padded_permutation():
    key = jax.random.key(0)
    order, mask = map(np.asarray, multistep.epoch_order(key, 3, 10, 4))
    assert order.shape == mask.shape == (3, 4)
    assert sorted(order[mask].tolist()) == list(range(10))
    assert mask.sum() == 10 and not mask[-1, 2:].any()
    again, _ = multistep.epoch_order(key, 3, 10, 4)
    other, _ = multistep.epoch_order(key, 4, 10, 4)
    np.testing.assert_array_equal(order, again)
    assert not np.array_equal(order[mask], np.asarray(other)[mask])


def test_an_eval_batch_is_cut_to_the_examples_it_holds():
    assert multistep.fitted_eval_batch(10**6, 256) == 256  # one batch either way, not a million padded rows
    assert multistep.fitted_eval_batch(10**6, 250, devices=4) == 252  # still splits over the devices
    assert multistep.fitted_eval_batch(128, 256) == 128


@pytest.mark.parametrize(
    "steps, calls, expected",
    [(196, 8, 14), (196, 1, 196), (8, 8, 1), (24, 8, 3), (197, 8, 197), (10, 100, 1)],
)
def test_steps_per_call_divides_the_epoch(steps, calls, expected):
    size = multistep.steps_per_call(steps, calls)
    assert size == expected and steps % size == 0


def test_train_and_evaluate_writes_metrics_and_config(smoke_run):
    config, workdir, state, out = smoke_run.config, smoke_run.workdir, smoke_run.state, smoke_run.out
    assert "119,546 parameters" in out and "MB" in out
    assert "Epoch [2], last_lr:" in out and "test_acc:" in out
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2]
    steps_per_epoch = 8  # 250 images in batches of 32, the last one padded
    assert [r["step"] for r in records] == [8, 16, 24] and int(state.step) == 24
    lr, _ = one_cycle_schedules(config, 3 * steps_per_epoch)
    assert records[0]["last_lr"] == pytest.approx(float(lr(7)), rel=1e-5)
    # Synthetic data is learnable: well above the 10 % of chance after 3 short epochs.
    assert records[-1]["test_acc"] > 0.3
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["dataset"] == "synthetic" and saved["num_epochs"] == 3


def _run_cli(*args, cwd=REPO):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "cifar_jax.train", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


# `python -m cifar_jax.train`, reporting at exit which compiled programs it took from the
# persistent compilation cache and which it compiled (JAX's public monitoring events).
CHILD_COUNTING_COMPILES = """
import atexit, collections, json, runpy, sys
import jax
hits, compiled, since = collections.Counter(), collections.Counter(), []
def on_event(event, **kwargs):
    if event == "/jax/compilation_cache/cache_hits":
        since.append(1)
def on_duration(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
        name = str(kwargs.get("fun_name", "?"))
        (hits if since else compiled)[name] += 1
        since.clear()
jax.monitoring.register_event_listener(on_event)
jax.monitoring.register_event_duration_secs_listener(on_duration)
atexit.register(lambda: print("COMPILES", json.dumps({"hits": hits, "compiled": compiled})))
sys.argv[0] = "cifar_jax.train"
runpy.run_module("cifar_jax.train", run_name="__main__", alter_sys=True)
"""


def test_cli_smoke_run_takes_the_steps_this_test_run_compiled(tmp_path, smoke_run):
    """The README's smoke command in a new process, after the in-process smoke run compiled
    the same steps: the one XLA cache of the test run (tests/conftest.py) hands them over, so
    the subprocess compiles none of the big programs again."""
    workdir = tmp_path / "smoke"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", CHILD_COUNTING_COMPILES, "--config", "configs/smoke.py",
                             "--workdir", str(workdir)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "Epoch [2]" in result.stdout
    line = [line for line in result.stdout.splitlines() if line.startswith("COMPILES ")][-1]
    counts = json.loads(line[len("COMPILES "):])
    for program in ("jit(train_steps)", "jit(eval_batches)", "jit(init)"):
        assert counts["hits"].get(program) == 1 and program not in counts["compiled"], line
    # The same metrics, epoch for epoch: the same run (timings aside).
    timing = ("train_seconds", "epoch_seconds")
    ours, theirs = ([{k: v for k, v in json.loads(line).items() if k not in timing}
                     for line in (path / "metrics.jsonl").read_text().splitlines()]
                    for path in (workdir, smoke_run.workdir))
    assert ours == theirs


def _image_folder(root, train_classes, test_classes):
    for split, classes in (("train", train_classes), ("test", test_classes)):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            Image.fromarray(np.full((32, 32, 3), 40, np.uint8)).save(folder / "0.png")
    return root


def _error_of(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "\n" not in err
    return err


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["--config.bogus=1"], "unknown config key 'bogus'"),
        (["--config.num_epochs=abc"], "--config.num_epochs=abc: expected an integer"),
        (["--config.num_epochs=2.5"], "expected an integer"),
        (["--config.learning_rate=fast"], "learning_rate"),
        (["--config.verify_md5=maybe"], "expected true or false"),
        (["--config.mean=(0.5,0.5)"], "expected 3"),
        (["--config.batch_size=0"], "batch_size=0 must be a positive integer"),
        (["--config.weight_decay_mode=sgd"], "weight_decay_mode"),
        (["--config.dataset=imagenet"], "imagenet"),
        # Out of range: each used to end in a traceback (optax, round(), jax.random.key, a 4 TB
        # allocation that also left a workdir behind), or worked with a seed repeating another.
        (["--config.learning_rate=1e999"], "learning_rate=inf must be a finite number"),
        (["--config.width=1e999"], "width=inf must be a finite number"),
        (["--config.width=100"], "width=100.0 must be at most 16"),
        (["--config.seed=1180591620717411303424"], "seed=1180591620717411303424 must be an integer in 0..4,294,967,295"),
        (["--config.seed=-1"], "seed=-1 must be an integer in 0..4,294,967,295"),
        (["--config.synthetic_train_size=-5"], "synthetic_train_size=-5 must be a positive integer"),
        (["--config.batch_size=1000000000000"], "batch_size=1000000000000 must be a positive integer of at most"),
        (["--config.eval_batch_size=1000000000000"], "eval_batch_size=1000000000000 must be a positive integer of"),
        (["--config.download_timeout=1e999"], "download_timeout=inf must be a finite number"),
        (["--config.mean=(1e999, 0.5, 0.5)"], "mean=(inf, 0.5, 0.5) must hold 3 finite numbers"),
    ],
)
def test_bad_config_is_a_one_line_error_and_touches_nothing(tmp_path, capsys, overrides, expected):
    workdir = tmp_path / "run"
    err = _error_of(["--config", str(REPO / "configs/smoke.py"), "--workdir", str(workdir), *overrides], capsys)
    assert expected in err
    assert not workdir.exists()


def test_config_file_values_of_the_wrong_type_are_one_line():
    """A config file builds its own ConfigDict: its values need not have the default's types."""
    import ml_collections

    from cifar_jax.config import validate_config
    from cifar_jax.errors import ConfigError
    from tests.cifar_files import assert_one_line, make_config

    for key, value, expected in [("learning_rate", "1e-3", "learning_rate='1e-3' must be a finite number"),
                                 ("num_epochs", 2.0, "num_epochs=2.0 must be a positive integer"),
                                 ("seed", True, "seed=True must be an integer"),
                                 ("std", (0.2, "x", 0.2), "must hold 3 finite numbers")]:
        with pytest.raises(ConfigError) as error:
            validate_config(ml_collections.ConfigDict({**make_config().to_dict(), key: value}))
        assert_one_line(error, expected)


def test_a_batch_larger_than_the_data_is_refused_and_leaves_no_folder(tmp_path, capsys):
    """Found once the data is read (2 training images here), before anything is written: the
    workdir this run created, with its missing parents, is gone again."""
    folder = _image_folder(tmp_path / "images", ["cat", "dog"], ["cat", "dog"])
    argv = ["--config", str(REPO / "configs/smoke.py"), "--workdir", str(tmp_path / "new" / "runs" / "run"),
            "--config.dataset=image_folder", f"--config.data_dir={folder}", f"--config.cache_dir={tmp_path / 'cache'}",
            "--config.num_classes=2"]
    expected = "batch_size=32 is more than the 2 training images; set --config.batch_size to at most 2"
    assert expected in _error_of(argv + ["--dry-run"], capsys)
    assert expected in _error_of(argv, capsys)
    assert not (tmp_path / "new").exists()


def test_missing_config_file_and_workdir(tmp_path, capsys):
    assert "is neither a file" in _error_of(["--config", "nope.py", "--workdir", str(tmp_path)], capsys)
    assert "--workdir is required" in _error_of(["--config", str(REPO / "configs/smoke.py")], capsys)


def test_num_classes_that_does_not_match_the_data(tmp_path, capsys):
    folder = _image_folder(tmp_path / "images", ["cat", "dog"], ["cat", "dog"])
    err = _error_of(
        [
            "--config", str(REPO / "configs/smoke.py"), "--workdir", str(tmp_path / "run"),
            "--config.dataset=image_folder", f"--config.data_dir={folder}",
            f"--config.cache_dir={tmp_path / 'cache'}", "--config.num_classes=10",
        ],
        capsys,
    )
    assert "num_classes=10" in err and "--config.num_classes=2" in err
    assert not (tmp_path / "run").exists()


def test_missing_data_is_a_one_line_error(tmp_path, capsys):
    err = _error_of(
        [
            "--config", str(REPO / "configs/default.py"), "--workdir", str(tmp_path / "run"),
            f"--config.data_dir={tmp_path / 'nothing'}", "--config.download=false",
        ],
        capsys,
    )
    assert "cifar-100-python.tar.gz" in err
    assert not (tmp_path / "run").exists()


def test_a_workdir_of_another_config_is_refused_and_kept(tmp_path, capsys):
    workdir = tmp_path / "run"
    workdir.mkdir()
    saved = load_config_file(str(REPO / "configs/smoke.py"))
    (workdir / "config.json").write_text(saved.to_json(indent=2))
    (workdir / "metrics.jsonl").write_text('{"epoch": 0}\n')
    err = _error_of(
        ["--config", str(REPO / "configs/smoke.py"), "--workdir", str(workdir), "--config.learning_rate=0.5"],
        capsys,
    )
    assert "different config (learning_rate)" in err
    assert (workdir / "metrics.jsonl").read_text() == '{"epoch": 0}\n'


def test_metrics_without_a_config_are_refused(tmp_path, capsys):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "metrics.jsonl").write_text('{"epoch": 0}\n')
    err = _error_of(["--config", str(REPO / "configs/smoke.py"), "--workdir", str(workdir)], capsys)
    assert "no config.json" in err


@pytest.mark.parametrize("content, expected", [
    (b'{"dataset": "synth', "is not readable JSON (JSONDecodeError); restore it from a copy of the run"),
    (b"\xff\xfe garbage", "is not readable JSON (UnicodeDecodeError)"),
    (b"[1, 2]", "does not hold a config object; pass a new --workdir"),
])
def test_a_damaged_config_json_is_refused_and_kept(tmp_path, capsys, content, expected):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.json").write_bytes(content)
    err = _error_of(["--config", str(REPO / "configs/smoke.py"), "--workdir", str(workdir)], capsys)
    assert f"{workdir / 'config.json'} {expected}" in err
    assert (workdir / "config.json").read_bytes() == content
    assert sorted(p.name for p in workdir.iterdir()) == ["config.json"]


def test_a_model_variant_is_the_default_config_with_another_model(capsys):
    variant = load_config_file(f"{REPO / 'configs' / 'default.py'}:resnet18").to_dict()
    assert variant == load_config_file(str(REPO / "configs" / "resnet18.py")).to_dict()
    default = load_config_file(str(REPO / "configs" / "default.py")).to_dict()
    assert {key for key in default if default[key] != variant[key]} == {"model"}
    err = _error_of(["--config", f"{REPO / 'configs' / 'smoke.py'}:resnet18", "--workdir", "unused"], capsys)
    assert "get_config('resnet18') in " in err and "smoke.py failed: TypeError" in err


def _summary_records(accuracies, train_seconds):
    return [{"epoch": e, "test_acc": a, "train_seconds": s} for e, (a, s) in enumerate(zip(accuracies, train_seconds))]


def test_the_end_of_run_summary(tmp_path):
    from cifar_jax import run_summary

    workdir = tmp_path / "my run"
    (workdir / "tensorboard").mkdir(parents=True)
    (workdir / "curves.png").write_bytes(b"png")
    records = _summary_records([0.3, 0.8, 0.5, 0.6], [9.0, 2.0, 2.0, 4.0])
    text = run_summary.summary(workdir, records, 4, records[1:], 125.0, 1000)
    quoted = shlex.quote(str(workdir))
    assert text.splitlines() == [
        f"Run finished: 4 epochs trained, in {workdir}",
        "  test top-1   0.6000 after the last epoch (4), best 0.8000 after epoch 2 (Epoch [1] in the log)",
        # 3 epochs trained by this command: the speed leaves the first (it compiled) out.
        "  time         2 min 05 s wall for this command, which trained 3 epochs",
        "  speed        333 train images/s (the 2 epochs after the first, which also compiled)",
        f"  checkpoints  {workdir / 'checkpoints'}   (evaluate the best: python -m cifar_jax.evaluate "
        f"--workdir {quoted} --best)",
        f"  metrics      {workdir / 'metrics.jsonl'}",
        f"  curves       {workdir / 'curves.png'}",
        f"  TensorBoard  {workdir / 'tensorboard'}   (pip install tensorboard; tensorboard --logdir "
        f"{shlex.quote(str(workdir / 'tensorboard'))})",
    ]
    (workdir / "tensorboard").rmdir()
    text = run_summary.summary(workdir, records[:2], 3, records[1:2], 7200.0, 1000)
    assert text.startswith(f"Run finished: 2 of 3 epochs trained, in {workdir}\n")
    assert "0.8000 after the last epoch (2), the run's best" in text
    assert "2 h 00 min wall for this command, which trained 1 epoch\n" in text
    assert "  speed        500 train images/s (one epoch, compiling included)\n" in text
    assert "TensorBoard" not in text


def test_num_epochs_may_change_to_train_a_run_longer():
    from cifar_jax.config import training_changes

    saved = json.loads(load_config_file("smoke").to_json())
    assert training_changes(saved, {**saved, "num_epochs": 6}) == []
    assert training_changes(saved, {**saved, "num_epochs": 6, "seed": 1}) == ["seed"]


class _Stream(io.StringIO):
    def __init__(self, terminal):
        super().__init__()
        self.terminal = terminal

    def isatty(self):
        return self.terminal


def test_progress_off_a_terminal_is_a_plain_line_now_and_then():
    from cifar_jax import progress

    now = [0.0]
    stream = _Stream(terminal=False)
    plain = progress.PlainProgress(100, "epoch 3", stream, interval=60, clock=lambda: now[0])
    for _ in range(10):  # ten calls of 10 steps, 25 s each
        now[0] += 25
        plain.update(10)
    # A line once 60 s have passed since the last (at 75, 150 and 225 s); none at the end.
    assert stream.getvalue() == ("epoch 3: 30/100 steps (30%), 75 s so far, about 175 s to go\n"
                                 "epoch 3: 60/100 steps (60%), 150 s so far, about 100 s to go\n"
                                 "epoch 3: 90/100 steps (90%), 225 s so far, about 25 s to go\n")
    with progress.epoch_progress(8, "epoch 0", file=stream) as bar:
        assert isinstance(bar, progress.PlainProgress)
    terminal = _Stream(terminal=True)
    with progress.epoch_progress(8, "epoch 0", file=terminal) as bar:
        bar.update(8)
    assert "\r" in terminal.getvalue() and "epoch 0" in terminal.getvalue()  # tqdm's bar, on a terminal only
    quiet = _Stream(terminal=True)
    with progress.epoch_progress(8, "epoch 0", enabled=False, file=quiet) as bar:
        bar.update(8)
    assert quiet.getvalue() == ""
