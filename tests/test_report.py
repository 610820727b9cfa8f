import json

import numpy as np
import pytest
from PIL import Image

from cifar_jax import report
from cifar_jax.errors import CifarJaxError

PNG = b"\x89PNG\r\n\x1a\n"


def _metrics(workdir, records):
    workdir.mkdir(exist_ok=True)
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def _record(epoch, acc):
    return {"epoch": epoch, "step": 8 * (epoch + 1), "train_loss": 2.0 - acc, "train_acc": acc - 0.05,
            "test_loss": 2.1 - acc, "test_acc": acc, "last_lr": 1e-3}


def test_write_curves(tmp_path):
    # Epoch 2 written twice: a run resumed from the checkpoint of epoch 1; the last wins.
    records = [_record(0, 0.2), _record(1, 0.4), _record(2, 0.1), _record(2, 0.5), _record(3, 0.6)]
    _metrics(tmp_path, records)
    assert [r["test_acc"] for r in report.read_metrics(tmp_path)] == [0.2, 0.4, 0.5, 0.6]
    path = report.write_curves(tmp_path)
    assert path == tmp_path / "curves.png" and path.read_bytes()[:8] == PNG
    width, height = Image.open(path).size
    assert width > height >= 400
    assert not list(tmp_path.glob("*.tmp*"))


def test_curves_errors(tmp_path, capsys):
    with pytest.raises(CifarJaxError, match="metrics.jsonl is missing"):
        report.write_curves(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 0}\nnot json\n')
    with pytest.raises(CifarJaxError, match="line 2 is not an epoch record"):
        report.write_curves(tmp_path)
    assert report.main(["--workdir", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert not (tmp_path / "curves.png").exists()


def test_report_cli_writes_curves(tmp_path, capsys):
    _metrics(tmp_path, [_record(0, 0.3), _record(1, 0.5)])
    assert report.main(["--workdir", str(tmp_path)]) == 0
    assert (tmp_path / "curves.png").read_bytes()[:8] == PNG


def test_confusion_100_classes_is_large_enough_to_read(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 100, 5000)
    predictions = np.where(rng.random(5000) < 0.7, labels, rng.integers(0, 100, 5000))
    matrix = np.zeros((100, 100), np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    names = [f"class_name_{i}" for i in range(100)]
    path = report.write_confusion(tmp_path / "confusion.png", matrix, names)
    assert path.read_bytes()[:8] == PNG
    width, height = Image.open(path).size
    assert min(width, height) >= 2000  # ~25 px per class row, room for the names
    with pytest.raises(ValueError, match="class names"):
        report.write_confusion(tmp_path / "x.png", matrix, names[:10])
