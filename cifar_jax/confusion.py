"""evaluate's confusion figure: the whole row-normalised confusion matrix, and beside it
what a person reads at a glance: per-class accuracy, sorted, with the worst classes named,
and the most confused pairs of classes. Readable at 100 classes without zooming in.
"""
from __future__ import annotations

import pathlib
from typing import Sequence

import numpy as np

from cifar_jax.png import new_figure, save_png

# With more classes than this, the per-class bars are drawn unnamed (all classes, sorted)
# and the worst WORST_NAMED of them get a panel of their own, with names.
NAMED_BARS = 20
WORST_NAMED = 15
CONFUSED_PAIRS = 12


def normalised_rows(matrix) -> np.ndarray:
    """Each row of a count matrix divided by its sum (rows of 0 stay 0): row i, column j is
    the fraction of true class i predicted as j, so the diagonal is per-class accuracy."""
    matrix = np.asarray(matrix, np.float64)
    rows = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)


def most_confused(matrix, k: int = CONFUSED_PAIRS) -> list[tuple[int, int, float, int]]:
    """Up to k off-diagonal cells, most confused first: (true, predicted, fraction of the
    true class, count), ties broken by count then index; cells with no count left out."""
    counts = np.asarray(matrix, np.int64)
    fractions = normalised_rows(counts)
    cells = [(t, p) for t, p in zip(*np.nonzero(counts)) if t != p]
    cells.sort(key=lambda c: (-fractions[c], -counts[c], c))
    return [(int(t), int(p), float(fractions[t, p]), int(counts[t, p])) for t, p in cells[:k]]


def confusion_figure(matrix, class_names: Sequence[str]):
    """The figure: the matrix (rows = true class, columns = predicted class, each row
    divided by its count, a square-root colour scale so few-percent confusions stay visible),
    and in a column on its right the per-class accuracy (sorted, worst first) and the most
    confused pairs. `matrix` holds counts, shape (C, C)."""
    counts = np.asarray(matrix, np.int64)
    classes = len(class_names)
    if counts.shape != (classes, classes):
        raise ValueError(f"matrix of shape {counts.shape} for {classes} class names")
    names = [str(name) for name in class_names]
    normalised = normalised_rows(counts)
    # About 0.16 inch per class: 100 classes -> a 2400 px square at 150 dpi, names at 5 pt.
    side = max(6.0, 0.16 * classes + 2.5)
    panels = 2 if classes <= NAMED_BARS else 3
    height = max(side, 4.0 * panels)
    figure = new_figure(figsize=(side + 1.2 + 7.5, height), layout="constrained")
    grid = figure.add_gridspec(panels, 2, width_ratios=[side + 1.2, 7.5])
    _matrix(figure, figure.add_subplot(grid[:, 0]), counts, normalised, names)
    accuracy = np.diag(normalised)
    seen = counts.sum(axis=1) > 0  # classes without test images have no accuracy
    order = [i for i in np.argsort(accuracy, kind="stable") if seen[i]]
    if classes <= NAMED_BARS:
        _named_bars(figure.add_subplot(grid[0, 1]), order, accuracy, names, "Per-class accuracy, worst first")
    else:
        _sorted_bars(figure.add_subplot(grid[0, 1]), order, accuracy)
        _named_bars(figure.add_subplot(grid[1, 1]), order[:WORST_NAMED], accuracy, names,
                    f"The {min(WORST_NAMED, len(order))} worst classes")
    _pairs(figure.add_subplot(grid[panels - 1, 1]), most_confused(counts), names)
    return figure


def _matrix(figure, axes, counts, normalised, names) -> None:
    from matplotlib.colors import PowerNorm

    classes = len(names)
    font = 5 if classes > 40 else 8
    image = axes.imshow(normalised, cmap="viridis", norm=PowerNorm(0.5, vmin=0, vmax=1), interpolation="nearest")
    ticks = np.arange(classes)
    axes.set_xticks(ticks, labels=names, rotation=90, fontsize=font)
    axes.set_yticks(ticks, labels=names, fontsize=font)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    top1 = np.trace(counts) / max(counts.sum(), 1)
    axes.set_title(f"Confusion matrix, rows normalised (top-1 {top1:.4f}, {int(counts.sum()):,} images)")
    colorbar = figure.colorbar(image, ax=axes, fraction=0.04, pad=0.01)
    colorbar.set_label("fraction of the true class (square-root colour scale)")


def _sorted_bars(axes, order, accuracy) -> None:
    values = accuracy[order]
    axes.bar(np.arange(1, len(values) + 1), values, width=1.0, color="C0")
    axes.axhline(values.mean(), color="C3", linestyle="--", linewidth=1, label=f"mean {values.mean():.3f}")
    axes.set(xlim=(0.5, len(values) + 0.5), ylim=(0, 1), xlabel="class, worst to best", ylabel="accuracy",
             title=f"Per-class accuracy, all {len(values)} classes sorted")
    axes.legend(loc="upper left", fontsize=10)
    axes.grid(alpha=0.3, axis="y")


def _named_bars(axes, order, accuracy, names, title) -> None:
    values = accuracy[order]
    rows = np.arange(len(order))
    axes.barh(rows, values, color="C0")
    axes.set_yticks(rows, labels=[names[i] for i in order], fontsize=10)
    axes.invert_yaxis()  # worst at the top
    for row, value in zip(rows, values):  # the figure at the bar's end, inside it if it is long
        inside = value > 0.85
        axes.text(value - 0.01 if inside else value + 0.01, row, f"{value:.1%}", va="center", fontsize=9,
                  ha="right" if inside else "left", color="white" if inside else "black")
    axes.set(xlim=(0, 1), xlabel="accuracy (fraction of the class's test images)", title=title)
    axes.grid(alpha=0.3, axis="x")


def _pairs(axes, pairs, names) -> None:
    axes.set_title("Most confused pairs (true \u2192 predicted)")
    if not pairs:
        axes.text(0.5, 0.5, "no image was misclassified", ha="center", va="center", transform=axes.transAxes)
        axes.set_axis_off()
        return
    rows = np.arange(len(pairs))
    fractions = [fraction for _, _, fraction, _ in pairs]
    axes.barh(rows, fractions, color="C1")
    axes.set_yticks(rows, labels=[f"{names[t]} \u2192 {names[p]}" for t, p, _, _ in pairs], fontsize=10)
    axes.invert_yaxis()
    for row, (_, _, fraction, count) in zip(rows, pairs):
        axes.text(fraction + 0.005, row, f"{fraction:.1%} ({count})", va="center", fontsize=9)
    axes.set(xlim=(0, min(1.0, max(fractions) * 1.35 + 0.02)), xlabel="fraction of the true class")
    axes.grid(alpha=0.3, axis="x")


def write_confusion(path, matrix, class_names: Sequence[str]) -> pathlib.Path:
    """confusion_figure of `matrix` (counts) written to the PNG file `path`."""
    return save_png(confusion_figure(matrix, class_names), path, dpi=150)
