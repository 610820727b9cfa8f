"""curves.png and the confusion figure, read back through matplotlib's objects (tick
labels, line data, bar labels, the image array) and decoded from the PNG files."""
import json

import numpy as np
import pytest
from PIL import Image

from cifar_jax import confusion, report
from cifar_jax.errors import CifarJaxError

PNG = b"\x89PNG\r\n\x1a\n"


def _metrics(workdir, records):
    workdir.mkdir(exist_ok=True)
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def _record(epoch, acc, beta1=0.9):
    return {"epoch": epoch, "step": 8 * (epoch + 1), "train_loss": 2.0 - acc, "train_acc": acc - 0.05,
            "test_loss": 2.1 - acc, "test_acc": acc, "last_lr": 1e-3 / (epoch + 1), "last_beta1": beta1}


def _lines(axes):
    """{label: (x, y)} of the axes' lines."""
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in axes.get_lines()}


def _tick_labels(axes):
    return [label.get_text() for label in axes.get_xticklabels()]


def test_write_curves(tmp_path):
    # Epoch 2 written twice: a run resumed from the checkpoint of epoch 1; the last wins.
    records = [_record(0, 0.2), _record(1, 0.4), _record(2, 0.1), _record(2, 0.5), _record(3, 0.6)]
    _metrics(tmp_path, records)
    assert [r["test_acc"] for r in report.read_metrics(tmp_path)] == [0.2, 0.4, 0.5, 0.6]
    path = report.write_curves(tmp_path)
    assert path == tmp_path / "curves.png" and path.read_bytes()[:8] == PNG
    width, height = Image.open(path).size
    assert width > 2.5 * height and height >= 400  # three panels side by side
    assert not list(tmp_path.glob("*.tmp*"))
    pixels = np.asarray(Image.open(path).convert("RGB"))
    assert (pixels.min(axis=-1) < 200).mean() > 0.02  # axes, text and lines, not an empty canvas


def test_curves_figure_reads_back(tmp_path):
    records = [_record(0, 0.2, 0.95), _record(1, 0.7, 0.85), _record(2, 0.5, 0.9), _record(3, 0.6, 0.95)]
    figure = report.curves_figure(records, "run")
    figure.draw_without_rendering()  # resolves the tick labels
    loss, accuracy, rates, momentum = figure.axes
    epochs = [1, 2, 3, 4]  # counted from 1: epoch 1 is the record of epoch 0
    for axes in (loss, accuracy, rates):
        assert _tick_labels(axes) == ["1", "2", "3", "4"] and axes.get_xlabel() == "epoch"
    lines = _lines(loss)
    assert lines["train loss"] == (epochs, [r["train_loss"] for r in records])
    assert lines["test loss"] == (epochs, [r["test_loss"] for r in records])
    lines = _lines(accuracy)
    assert lines["test accuracy"] == (epochs, [0.2, 0.7, 0.5, 0.6])
    assert lines["train accuracy"][1] == pytest.approx([0.15, 0.65, 0.45, 0.55])
    assert lines["best 0.7000 (epoch 2)"] == ([2], [0.7])  # the best epoch's marker
    for axes in (loss, accuracy, rates):  # and a line across every panel there
        assert _lines(axes)["best test accuracy"][0] == [2, 2]
    assert _lines(rates)["learning rate"] == (epochs, [r["last_lr"] for r in records])
    assert _lines(momentum)["beta1 / momentum"] == (epochs, [0.95, 0.85, 0.9, 0.95])
    assert momentum.get_ylabel() == "beta1 (Adam) / momentum (SGD)"
    assert [axes.get_title() for axes in (loss, accuracy, rates)] == ["Loss", "Accuracy", "Learning rate and momentum"]


def test_one_epoch_has_one_integer_tick_and_no_momentum_axis():
    """A one-epoch run used to get ticks -0.04 ... 0.04; records without beta1 (older runs)
    get no second axis."""
    record = _record(0, 0.3)
    del record["last_beta1"]
    figure = report.curves_figure([record])
    figure.draw_without_rendering()
    assert len(figure.axes) == 3
    for axes in figure.axes:
        assert _tick_labels(axes) == ["1"]


@pytest.mark.parametrize("epochs, ticks", [
    (1, [1]), (3, [1, 2, 3]), (10, list(range(1, 11))), (11, [1, 2, 4, 6, 8, 10]),
    (30, [1, 5, 10, 15, 20, 25, 30]), (200, [1, *range(20, 201, 20)]),
])
def test_epoch_ticks(epochs, ticks):
    assert report.epoch_ticks(epochs) == ticks


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


# The confusion figure -------------------------------------------------------------------

def _matrix_100():
    """Counts of 100 classes, 50 images each: class i right 50 - (i + 1) // 2 times (class
    99 is the worst, never right), and two chosen confusions on top of a uniform spread."""
    matrix = np.zeros((100, 100), np.int64)
    for i in range(100):
        right = 50 - (i + 1) // 2
        matrix[i, i] = right
        wrong = np.delete(np.arange(100), i)[: 50 - right]
        matrix[i, wrong] += 1
    matrix[10, 10] -= 9
    matrix[10, 20] += 9  # 10 -> 20: the most confused pair (9 of 50; the spread's cells hold 1)
    matrix[30, 30] -= 6
    matrix[30, 40] += 6  # 30 -> 40: 6 of 50
    return matrix


def _find(figure, title):
    return next(axes for axes in figure.axes if axes.get_title().startswith(title))


def test_confusion_figure_at_100_classes_names_the_worst_and_the_confused():
    matrix = _matrix_100()
    names = [f"class_name_{i}" for i in range(100)]
    figure = confusion.confusion_figure(matrix, names)
    figure.draw_without_rendering()
    # The whole matrix, rows normalised, rows = true classes in order.
    grid = _find(figure, "Confusion matrix")
    np.testing.assert_allclose(grid.get_images()[0].get_array(), matrix / matrix.sum(axis=1, keepdims=True))
    assert [t.get_text() for t in grid.get_yticklabels()] == names
    assert any("square-root" in axes.get_ylabel() for axes in figure.axes)  # the colorbar says its scale
    # All classes' accuracy as sorted bars, then the 15 worst by name, worst first.
    accuracy = np.diag(matrix) / matrix.sum(axis=1)
    bars = _find(figure, "Per-class accuracy, all 100 classes sorted")
    np.testing.assert_allclose([p.get_height() for p in bars.patches], np.sort(accuracy))
    worst = _find(figure, "The 15 worst classes")
    labels = [t.get_text() for t in worst.get_yticklabels()]
    assert labels == [names[i] for i in np.argsort(accuracy, kind="stable")[:15]]
    assert labels[0] == "class_name_99"
    # The most confused pairs: 10 -> 20 first (9 of 50), 30 -> 40 second (6 of 50).
    pairs = _find(figure, "Most confused pairs")
    labels = [t.get_text() for t in pairs.get_yticklabels()]
    assert labels[:2] == ["class_name_10 \u2192 class_name_20", "class_name_30 \u2192 class_name_40"]
    assert [p.get_width() for p in pairs.patches][:2] == pytest.approx([9 / 50, 6 / 50])
    # write_confusion saves it at 150 dpi (evaluate's tests write and decode the file).
    width, height = figure.get_size_inches() * 150
    assert min(width, height) >= 2000  # ~25 px per class row, room for the names
    with pytest.raises(ValueError, match="class names"):
        confusion.confusion_figure(matrix, names[:10])


def test_confusion_figure_of_few_classes_and_of_no_mistakes():
    names = [f"c{i}" for i in range(4)]
    figure = confusion.confusion_figure(np.diag([5, 0, 3, 4]), names)  # class 1 has no test image
    figure.draw_without_rendering()
    bars = _find(figure, "Per-class accuracy, worst first")  # few classes: one panel, all named
    assert [t.get_text() for t in bars.get_yticklabels()] == ["c0", "c2", "c3"]
    assert _find(figure, "Most confused pairs").texts[0].get_text() == "no image was misclassified"
    assert confusion.most_confused(np.array([[3, 1, 0], [2, 2, 0], [0, 0, 0]])) == [
        (1, 0, 0.5, 2), (0, 1, 0.25, 1)]


def test_png_errors_are_one_line_and_leave_no_half_written_file(tmp_path, monkeypatch):
    import sys

    from cifar_jax import png

    figure = png.new_figure(figsize=(1, 1))
    with pytest.raises(CifarJaxError) as error:
        png.save_png(figure, tmp_path / "missing" / "curves.png", dpi=10)
    assert "\n" not in str(error.value) and "curves.png" in str(error.value)
    assert not (tmp_path / "missing").exists()
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if matplotlib were not installed
    with pytest.raises(CifarJaxError, match="pip install matplotlib"):
        png.new_figure()
