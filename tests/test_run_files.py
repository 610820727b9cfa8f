"""A full disk while the run's small files are written: one clear error, no torn file,
and (through the training CLI) nothing of the run lost."""
import json
import os

import pytest

from cifar_jax import checkpoint, report, run_dir, run_files, train
from cifar_jax.config import parse_command_line
from cifar_jax.errors import CifarJaxError
from tests.conftest import REPO
from tests.disks import fill, tiny_disk


@pytest.fixture
def disk(tmp_path):
    with tiny_disk(tmp_path / "disk", "1m") as path:
        yield path


def test_a_full_disk_keeps_the_old_file_whole(disk):
    target = disk / "config.json"
    run_files.write_text_atomically(target, '{"old": true}')
    fill(disk)
    with pytest.raises(run_files.RunFileWriteError) as error:
        run_files.write_text_atomically(target, '{"new": true}' + " " * 10000)
    assert str(error.value) == (f"could not write {target} (No space left on device); free space on that "
                                "disk or pass another --workdir; the files written before it are intact")
    assert isinstance(error.value, CifarJaxError)
    assert target.read_text() == '{"old": true}'
    assert sorted(p.name for p in disk.iterdir() if not p.name.startswith("filler")) == ["config.json"]


def test_a_line_that_does_not_fit_is_cut_back_off(disk):
    target = disk / "metrics.jsonl"
    run_files.append_line(target, '{"epoch": 0}')
    fill(disk)
    with pytest.raises(run_files.RunFileWriteError, match="metrics.jsonl .No space left on device."):
        pad = "x" * 2 * os.sysconf("SC_PAGE_SIZE")  # more than the first page's room: needs a new page
        run_files.append_line(target, '{"epoch": 1, "pad": "' + pad + '"}')
    assert target.read_text() == '{"epoch": 0}\n'


def _argv(workdir):
    return ["--config", str(REPO / "configs" / "smoke.py"), "--workdir", str(workdir)]


def test_a_disk_full_before_config_json_leaves_no_workdir(disk, monkeypatch, capsys):
    """The disk fills up while the data loads (another process wrote to it)."""
    real_load = train.load_dataset

    def load_then_fill(config):
        data = real_load(config)
        fill(disk)
        return data

    monkeypatch.setattr(train, "load_dataset", load_then_fill)
    workdir = disk / "run"
    assert train.main(_argv(workdir)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: could not write {workdir / 'config.json'} (No space left on device); free space "
                   "on that disk or pass another --workdir; the files written before it are intact"]
    assert not workdir.exists()  # created by this run, empty: removed (lock released first)


def test_a_disk_full_during_training_loses_nothing(disk, monkeypatch, capsys):
    """The disk fills up after config.json: the first metrics line does not fit."""
    real_open = checkpoint.open_manager

    def open_then_fill(workdir, config):
        checkpoints = real_open(workdir, config)
        fill(disk)
        return checkpoints

    monkeypatch.setattr(checkpoint, "open_manager", open_then_fill)
    workdir = disk / "run"
    assert train.main(_argv(workdir)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar's lines
    assert err == (f"error: could not write {workdir / 'metrics.jsonl'} (No space left on device); free space "
                   "on that disk or pass another --workdir; the files written before it are intact")
    config = json.loads((workdir / "config.json").read_text())  # whole, and the run's
    assert config["dataset"] == "synthetic" and config["width"] == 0.125
    assert not (workdir / "metrics.jsonl").exists() or (workdir / "metrics.jsonl").read_bytes() == b""
    assert not (workdir / ".lock").exists()
    assert not list((workdir / "checkpoints").iterdir())  # the epoch's checkpoint was never started
    # Space freed, the same command trains: the workdir was left resumable.
    for filler in disk.glob("filler-*"):
        filler.unlink()
    run_dir.check_workdir(str(workdir), parse_command_line(_argv(workdir))[0])


# metrics.jsonl after a crash: a torn last line is left out with a warning; other damage is named.

def _metrics(workdir, text: bytes):
    workdir.mkdir(exist_ok=True)
    (workdir / run_dir.METRICS_FILE).write_bytes(text)
    return workdir / run_dir.METRICS_FILE


def test_a_torn_last_metrics_line_is_dropped_when_a_run_resumes(tmp_path):
    file = _metrics(tmp_path / "run", b'{"epoch": 0, "test_acc": 0.1}\n{"epoch": 1, "test_acc": 0.2}\n{"epoch": 2, "te')
    with pytest.warns(run_dir.MetricsWarning, match=r"metrics.jsonl line 3 is torn .*left out"):
        run_dir.keep_metrics_before(tmp_path / "run", 2)
    assert file.read_text() == '{"epoch": 0, "test_acc": 0.1}\n{"epoch": 1, "test_acc": 0.2}\n'
    with pytest.warns(run_dir.MetricsWarning):  # the report reads such a file too (e.g. after the crash)
        _metrics(tmp_path / "run", file.read_bytes() + b"\0\0\0")  # what a lost page can leave
        assert [r["epoch"] for r in report.read_metrics(tmp_path / "run")] == [0, 1]


def test_a_last_line_without_its_newline_is_kept_and_ended(tmp_path):
    file = _metrics(tmp_path / "run", b'{"epoch": 0}\n{"epoch": 1}')
    run_dir.keep_metrics_before(tmp_path / "run", 5)
    assert file.read_text() == '{"epoch": 0}\n{"epoch": 1}\n'  # the next line is appended on a line of its own


@pytest.mark.parametrize("damage", [b'{"epoch": 0}\n{"epo\n{"epoch": 1}\n', b'{"epoch": 0}\n[1, 2]\n{"epoch": 1}\n',
                                    b'{"epoch": "0"}\n{"epoch": 1}\n', b'\xff\xfe\n{"epoch": 1}\n'])
def test_damage_a_crash_cannot_leave_is_one_line_and_kept(tmp_path, damage):
    file = _metrics(tmp_path / "run", damage)
    with pytest.raises(CifarJaxError) as error:
        run_dir.keep_metrics_before(tmp_path / "run", 1)
    assert "\n" not in str(error.value) and f"{file} line " in str(error.value)
    assert "is not an epoch record; the file is damaged" in str(error.value)
    assert file.read_bytes() == damage
