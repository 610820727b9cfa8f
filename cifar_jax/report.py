"""The run report: `curves.png` from WORKDIR/metrics.jsonl and `confusion.png`.

`python -m cifar_jax.report --workdir DIR` (re)writes DIR/curves.png. matplotlib is
imported only here, when a figure is drawn, and only its Agg renderer is used (no
display needed). Figures are written to a temporary file and renamed, so a failure
never leaves half a PNG behind.
"""
from __future__ import annotations

import json
import os
import pathlib
import sys
from typing import Sequence

import numpy as np

from cifar_jax.cli_common import ArgumentParser
from cifar_jax.errors import CifarJaxError
from cifar_jax.invocation import command
from cifar_jax.run_files import write_error
from cifar_jax.run_layout import CURVES_FILE, METRICS_FILE


def _figure(**kwargs):
    try:
        from matplotlib.figure import Figure  # Figure.savefig renders with Agg, no pyplot
    except ImportError:
        raise CifarJaxError("drawing the report needs matplotlib; pip install matplotlib") from None
    return Figure(**kwargs)


def _save(figure, path: pathlib.Path, dpi: int) -> pathlib.Path:
    tmp = path.with_name(path.name + ".tmp.png")
    try:
        figure.savefig(tmp, dpi=dpi, format="png")
        os.replace(tmp, path)
    except OSError as error:
        raise write_error(path, error) from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_metrics(workdir) -> list[dict]:
    """The per-epoch records of WORKDIR/metrics.jsonl; for an epoch written twice (a run
    resumed from an earlier checkpoint) the last record wins. Sorted by epoch."""
    path = pathlib.Path(workdir) / METRICS_FILE
    if not path.is_file():
        raise CifarJaxError(f"{path} is missing; pass the --workdir of a training run")
    records: dict[int, dict] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            records[int(record["epoch"])] = record
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise CifarJaxError(f"{path} line {number} is not an epoch record; the file is damaged") from None
    return [records[epoch] for epoch in sorted(records)]


def write_curves(workdir) -> pathlib.Path:
    """WORKDIR/curves.png: train and test loss, and test (and train) accuracy, per epoch."""
    records = read_metrics(workdir)
    if not records:
        raise CifarJaxError(f"{pathlib.Path(workdir) / METRICS_FILE} holds no epochs yet")
    epochs = [r["epoch"] for r in records]

    def series(key):
        return [r.get(key, np.nan) for r in records]

    figure = _figure(figsize=(11, 4.2), layout="constrained")
    loss, accuracy = figure.subplots(1, 2)
    loss.plot(epochs, series("train_loss"), "o-", markersize=3, label="train loss")
    loss.plot(epochs, series("test_loss"), "o-", markersize=3, label="test loss")
    loss.set(xlabel="epoch", ylabel="cross-entropy", title="Loss")
    if any("train_acc" in r for r in records):
        accuracy.plot(epochs, series("train_acc"), "o-", markersize=3, label="train accuracy")
    accuracy.plot(epochs, series("test_acc"), "o-", markersize=3, label="test accuracy")
    best = int(np.nanargmax(series("test_acc")))
    accuracy.annotate(f"best {records[best]['test_acc']:.4f} (epoch {epochs[best]})",
                      (epochs[best], records[best]["test_acc"]), textcoords="offset points",
                      xytext=(-10, -18), ha="right", fontsize=8)
    accuracy.set(xlabel="epoch", ylabel="accuracy", title="Accuracy", ylim=(0, 1))
    for axes in (loss, accuracy):
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle(str(pathlib.Path(workdir).name))
    return _save(figure, pathlib.Path(workdir) / CURVES_FILE, dpi=120)


def write_confusion(path, matrix, class_names: Sequence[str]) -> pathlib.Path:
    """A row-normalised confusion matrix as a PNG: row = true class, column = predicted
    class, each row divided by its count (so the diagonal is per-class accuracy), class
    names on both axes, a square-root colour scale and its colorbar. `matrix` holds
    counts, shape (C, C)."""
    matrix = np.asarray(matrix, np.float64)
    classes = len(class_names)
    if matrix.shape != (classes, classes):
        raise ValueError(f"matrix of shape {matrix.shape} for {classes} class names")
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)

    # About 0.16 inch per class: 100 classes -> a 2400 px square at 150 dpi, names at 5 pt.
    side = max(6.0, 0.16 * classes + 2.5)
    font = 5 if classes > 40 else 8
    figure = _figure(figsize=(side + 1.2, side), layout="constrained")
    axes = figure.subplots()
    from matplotlib.colors import PowerNorm

    # A square-root colour scale: the few-percent confusions stay visible next to the diagonal.
    image = axes.imshow(normalised, cmap="viridis", norm=PowerNorm(0.5, vmin=0, vmax=1),
                        interpolation="nearest")
    ticks = np.arange(classes)
    axes.set_xticks(ticks, labels=list(class_names), rotation=90, fontsize=font)
    axes.set_yticks(ticks, labels=list(class_names), fontsize=font)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    accuracy = np.trace(matrix) / max(matrix.sum(), 1)
    axes.set_title(f"Confusion matrix, rows normalised (top-1 {accuracy:.4f})")
    colorbar = figure.colorbar(image, ax=axes, fraction=0.04, pad=0.01)
    colorbar.set_label("fraction of the true class")
    return _save(figure, pathlib.Path(path), dpi=150)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog=command("report"), description=(
        "Draw WORKDIR/curves.png again from WORKDIR/metrics.jsonl: loss, accuracy and learning rate "
        "per epoch. Needs no JAX, so it also runs where the run's packages are not installed."))
    parser.add_argument("--workdir", required=True, help="the --workdir of a training run")
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
        print(write_curves(args.workdir))
    except CifarJaxError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
