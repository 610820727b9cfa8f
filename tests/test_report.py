import json

import numpy as np
import pytest
from PIL import Image

from cifar_jax import report
from cifar_jax.errors import CifarJaxError

PNG = b"\x89PNG\r\n\x1a\n"
# matplotlib's first two line colours (C0, C1) and viridis at 1.0 (the colour of a cell whose
# whole row lies in it, with write_confusion's scale from 0 to 1).
BLUE, ORANGE, YELLOW = (31, 119, 180), (255, 127, 14), (253, 231, 37)


def _pixels(path):
    """The PNG decoded, as an (H, W, 3) uint8 array."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _near(pixels, colour, tolerance=12):
    """Mask of the pixels within `tolerance` of `colour` in every channel."""
    return (np.abs(pixels.astype(int) - np.asarray(colour)) <= tolerance).all(axis=-1)


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
    # Decoded: not blank, and both series drawn in each panel (loss left, accuracy right).
    pixels = _pixels(path)
    assert pixels.shape == (height, width, 3)
    assert (pixels.min(axis=-1) < 200).mean() > 0.02  # axes, text and lines, not an empty canvas
    for panel in (pixels[:, : width // 2], pixels[:, width // 2:]):
        assert _near(panel, BLUE).sum() > 100 and _near(panel, ORANGE).sum() > 100


def _test_accuracy_height(tmp_path, accuracies):
    """Median row of the test-accuracy line (orange) in the accuracy panel: smaller is higher."""
    _metrics(tmp_path, [_record(epoch, acc) for epoch, acc in enumerate(accuracies)])
    pixels = _pixels(report.write_curves(tmp_path))
    rows, _ = np.nonzero(_near(pixels[:, pixels.shape[1] // 2:], ORANGE))
    return float(np.median(rows)), pixels


def test_curves_follow_the_data(tmp_path):
    # The accuracy panel has a fixed 0..1 scale: a run at 80-90 % draws its test line well
    # above one at 10-20 %, and the two pictures differ.
    high, high_pixels = _test_accuracy_height(tmp_path / "high", [0.8, 0.85, 0.9])
    low, low_pixels = _test_accuracy_height(tmp_path / "low", [0.1, 0.15, 0.2])
    assert high_pixels.shape == low_pixels.shape
    assert low - high > 0.3 * high_pixels.shape[0] / 2, (high, low)
    assert (high_pixels != low_pixels).any(axis=-1).mean() > 0.01


def test_curves_errors(tmp_path, capsys):
    with pytest.raises(CifarJaxError, match="metrics.jsonl is missing"):
        report.write_curves(tmp_path)
    # Damage before the last line (a torn last line is left out: tests/test_run_files.py).
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 0}\nnot json\n{"epoch": 1}\n')
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
    assert _pixels(path).shape == (height, width, 3)
    with pytest.raises(ValueError, match="class names"):
        report.write_confusion(tmp_path / "x.png", matrix, names[:10])


def _yellow_cells(tmp_path, name, matrix):
    """(rows, columns) of the pixels drawn in the colour of a full row, left of the colorbar."""
    path = report.write_confusion(tmp_path / name, matrix, [f"c{i}" for i in range(len(matrix))])
    pixels = _pixels(path)
    rows, columns = np.nonzero(_near(pixels[:, : int(pixels.shape[1] * 0.8)], YELLOW))
    return rows, columns, pixels


def test_confusion_picture_shows_the_matrix(tmp_path):
    """The decoded picture, not only its header: a diagonal matrix draws full-row cells along
    the main diagonal (top left to bottom right, rows = true classes), a reversed one along
    the other diagonal, and a uniform one none at all. Rows are normalised, so a row of 5
    counts lights its cell as brightly as a row of 50."""
    classes = 10
    diagonal = np.diag(np.arange(1, classes + 1) * 5)
    rows, columns, diagonal_pixels = _yellow_cells(tmp_path, "diagonal.png", diagonal)
    assert len(rows) > 10 * classes  # every cell is many pixels
    assert np.corrcoef(rows, columns)[0, 1] > 0.95
    rows, columns, _ = _yellow_cells(tmp_path, "reversed.png", diagonal[::-1])
    assert np.corrcoef(rows, columns)[0, 1] < -0.95
    rows, _, uniform_pixels = _yellow_cells(tmp_path, "uniform.png", np.full((classes, classes), 7))
    assert len(rows) == 0
    assert uniform_pixels.shape == diagonal_pixels.shape
    assert (uniform_pixels != diagonal_pixels).any(axis=-1).mean() > 0.05
