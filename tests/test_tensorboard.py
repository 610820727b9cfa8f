"""WORKDIR/tensorboard: per-epoch scalars equal to metrics.jsonl, no duplicates after a
resume, evaluate's per-class accuracy and confusion image, and write errors that warn."""
import json
import shutil
import struct

import pytest

from cifar_jax import tensorboard
from cifar_jax.evaluate import evaluate_run
from cifar_jax.train import train_and_evaluate

TRAIN_TAGS = {tag for tag, _ in tensorboard.SCALARS} | {"speed/images_per_second"}


def read_events(directory):
    """[(file name, Event)] of every event file in `directory`, in name order, parsed
    from the TFRecord framing (CRCs checked) with tensorboardX's Event proto."""
    event_pb2, _, masked_crc32c = tensorboard._protos()
    events = []
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):
            header = data[i : i + 8]
            (length,) = struct.unpack("<Q", header)
            assert struct.unpack("<I", data[i + 8 : i + 12])[0] == masked_crc32c(header)
            payload = data[i + 12 : i + 12 + length]
            assert struct.unpack("<I", data[i + 12 + length : i + 16 + length])[0] == masked_crc32c(payload)
            events.append((path.name, event_pb2.Event.FromString(payload)))
            i += 16 + length
        assert i == len(data), f"{path.name} has trailing bytes"
    return events


def scalars(events, suffix=tensorboard.TRAIN_SUFFIX):
    """{tag: [(step, value), ...]} of the scalar values in the files ending in `suffix`."""
    out = {}
    for name, event in events:
        if name.endswith(suffix):
            for value in event.summary.value:
                if value.WhichOneof("value") == "simple_value":
                    out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def _records(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _assert_curves_equal_metrics(workdir, num_train):
    events = read_events(workdir / "tensorboard")
    assert events[0][1].file_version == "brain.Event:2"
    curves = scalars(events)
    assert set(curves) == TRAIN_TAGS
    records = _records(workdir)
    for tag, key in tensorboard.SCALARS:
        assert curves[tag] == [(r["epoch"], pytest.approx(r[key], rel=1e-6)) for r in records], tag
    assert curves["speed/images_per_second"] == [
        (r["epoch"], pytest.approx(num_train / r["train_seconds"], rel=1e-6)) for r in records]


@pytest.fixture(scope="module")
def resumed_run(smoke_run, tmp_path_factory):
    """The suite's smoke run (3 epochs), copied, its last checkpoint removed, and started
    again (it resumes after epoch 1 and trains epoch 2 a second time)."""
    workdir = shutil.copytree(smoke_run.workdir, tmp_path_factory.mktemp("tensorboard") / "run")
    first = read_events(workdir / "tensorboard")
    shutil.rmtree(workdir / "checkpoints" / "24")  # as if the run had stopped before saving epoch 2
    train_and_evaluate(smoke_run.config, str(workdir))
    return smoke_run.config, workdir, first


def test_training_curves_equal_metrics_jsonl_without_duplicates_after_resume(resumed_run):
    config, workdir, first = resumed_run
    assert [r["epoch"] for r in _records(workdir)] == [0, 1, 2]
    # Before the resume: the same tags over epochs 0..2.
    assert {tag: [s for s, _ in points] for tag, points in scalars(first).items()} == {
        tag: [0, 1, 2] for tag in TRAIN_TAGS}
    # After it: one training file, epochs 0, 1, 2 once each, the values of metrics.jsonl.
    files = {name for name, _ in read_events(workdir / "tensorboard") if name.endswith(".train")}
    assert len(files) == 1
    _assert_curves_equal_metrics(workdir, config.synthetic_train_size)
    # Adam's beta1 follows OneCycleLR's momentum cycle: 0.95 -> 0.85 -> back towards 0.95.
    beta1 = [r["last_beta1"] for r in _records(workdir)]
    assert all(config.beta1_min <= b <= config.beta1_max for b in beta1) and beta1[-1] > beta1[0]


def test_evaluate_adds_per_class_accuracy_and_the_confusion_image(resumed_run):
    _, workdir, _ = resumed_run
    result = evaluate_run(str(workdir))
    again = evaluate_run(str(workdir))  # the same checkpoint again: replaces, no duplicates
    events = read_events(workdir / "tensorboard")
    suffix = f".evaluate-step{result['step']}"
    assert len({name for name, _ in events if name.endswith(suffix)}) == 1
    assert again["tensorboard"].endswith(suffix)
    evaluation = scalars(events, suffix)
    assert evaluation["evaluate/top1"] == [(2, pytest.approx(result["top1"]))]
    per_class = {tag.rsplit("/", 1)[1]: points for tag, points in evaluation.items() if "/per_class/" in tag}
    assert per_class == {name: [(2, pytest.approx(acc))] for name, acc in result["per_class"].items()}
    images = [(event.step, value.image) for name, event in events if name.endswith(suffix)
              for value in event.summary.value if value.tag == "evaluate/confusion"]
    assert len(images) == 1 and images[0][0] == 2
    png = (workdir / f"confusion-step{result['step']}.png").read_bytes()
    assert images[0][1].encoded_image_string == png and images[0][1].width > 100
    # The training curves are untouched by evaluating.
    assert set(scalars(events)) == TRAIN_TAGS


def test_a_write_error_warns_once_and_training_goes_on(tmp_path, capsys):
    (tmp_path / "tensorboard").write_text("a file where the folder should be")
    record = {"epoch": 0, "train_loss": 1.0, "test_acc": 0.5, "train_seconds": 2.0}
    curves = tensorboard.TrainingCurves(tmp_path, 100, [record])
    curves.add_epoch(dict(record, epoch=1))
    curves.add_epoch(dict(record, epoch=2))
    err = capsys.readouterr().err.strip()
    assert err.startswith("warning: cannot write TensorBoard events to") and "\n" not in err
    assert "training goes on" in err


def test_other_processes_write_nothing(tmp_path):
    curves = tensorboard.TrainingCurves(tmp_path, 100, [{"epoch": 0, "train_loss": 1.0}], enabled=False)
    curves.add_epoch({"epoch": 1, "train_loss": 0.5})
    assert not (tmp_path / "tensorboard").exists()


def test_a_restart_rewrites_the_curves_from_the_kept_records(tmp_path):
    records = [{"epoch": e, "train_loss": 2.0 - e, "train_seconds": 1.0} for e in range(3)]
    tensorboard.TrainingCurves(tmp_path, 10, records)
    # Restart after epoch 0 (metrics.jsonl cut back to it): epochs 1, 2 are trained again.
    curves = tensorboard.TrainingCurves(tmp_path, 10, records[:1])
    curves.add_epoch({"epoch": 1, "train_loss": 0.25, "train_seconds": 1.0})
    got = scalars(read_events(tmp_path / "tensorboard"))
    assert got["train/loss"] == [(0, 2.0), (1, 0.25)]
    assert got["speed/images_per_second"] == [(0, 10.0), (1, 10.0)]


def _tree(path):
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*")}


def test_dry_run_of_a_trained_run_says_finished_or_where_it_resumes(resumed_run, tmp_path, capsys):
    """(Here because this module has a trained workdir: test_cli.py tests the other cases.)"""
    from cifar_jax.train import main

    _, workdir, _ = resumed_run
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    from tests.conftest import REPO

    argv = ["--config", str(REPO / "configs" / "smoke.py"), "--workdir", str(copy), "--dry-run"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert (f"Workdir: {copy} holds the finished run (checkpoint step 24, epoch 2): a run trains nothing "
            "(a larger --config.num_epochs trains it longer)") in out
    shutil.rmtree(copy / "checkpoints" / "24")
    before = _tree(copy)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert (f"Workdir: {copy}: a run resumes after epoch 1 at step 16 from {copy / 'checkpoints' / '16'} "
            "and trains epochs 2..2") in out
    assert _tree(copy) == before  # nothing written, no lock taken
