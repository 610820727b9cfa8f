"""The run's curves: `curves.png` from WORKDIR/metrics.jsonl, and the `report` command.

`cifar-jax report --workdir DIR` (or `python -m cifar_jax.report`) draws DIR/curves.png
again: loss, accuracy, and the learning rate with Adam's beta1 (or SGD's momentum), per
epoch, the best epoch marked. It imports no JAX (only numpy, and matplotlib through
cifar_jax.png). evaluate's confusion figure is cifar_jax.confusion.
"""
from __future__ import annotations

import pathlib
import sys
from typing import Sequence

import numpy as np

from cifar_jax.cli_common import ArgumentParser
from cifar_jax.errors import CifarJaxError
from cifar_jax.invocation import command
from cifar_jax.metrics_file import metric_lines
from cifar_jax.png import new_figure, save_png
from cifar_jax.run_layout import CURVES_FILE, METRICS_FILE


def read_metrics(workdir) -> list[dict]:
    """The per-epoch records of WORKDIR/metrics.jsonl; for an epoch written twice (a run
    resumed from an earlier checkpoint) the last record wins. Sorted by epoch. A torn last
    line (a crash while it was written) is left out with a warning (metrics_file.metric_lines)."""
    path = pathlib.Path(workdir) / METRICS_FILE
    if not path.is_file():
        raise CifarJaxError(f"{path} is missing; pass the --workdir of a training run")
    records = {record["epoch"]: record for _, record in metric_lines(pathlib.Path(workdir))}
    return [records[epoch] for epoch in sorted(records)]


def epoch_ticks(epochs: int) -> list[int]:
    """Integer x ticks for epochs 1..epochs: every one up to 10, else 1 and the multiples of
    a round step (2, 5, 10, 20, 50, ...) that gives at most 10 more."""
    step = next(s for s in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 10**9) if epochs / s <= 10)
    return sorted({1, *range(step, epochs + 1, step)})


def curves_figure(records: Sequence[dict], title: str = ""):
    """The figure of curves.png for metrics.jsonl's `records`: three panels over epochs
    counted from 1 (epoch 1 = the record of epoch 0, after one pass): train and test loss;
    train and test accuracy; the learning rate of each epoch's last step, with beta1 (Adam)
    or momentum (SGD) on a second axis. The best test accuracy's epoch is marked in each."""
    epochs = [int(r["epoch"]) + 1 for r in records]

    def series(key):
        return np.array([np.nan if r.get(key) is None else float(r[key]) for r in records])

    figure = new_figure(figsize=(15, 4.4), layout="constrained")
    loss, accuracy, rates = figure.subplots(1, 3)
    loss.plot(epochs, series("train_loss"), "o-", markersize=3, label="train loss")
    loss.plot(epochs, series("test_loss"), "o-", markersize=3, label="test loss")
    loss.set(ylabel="cross-entropy", title="Loss")
    if any("train_acc" in r for r in records):
        accuracy.plot(epochs, series("train_acc"), "o-", markersize=3, label="train accuracy")
    test_acc = series("test_acc")
    accuracy.plot(epochs, test_acc, "o-", markersize=3, label="test accuracy")
    accuracy.set(ylabel="accuracy", title="Accuracy", ylim=(0, 1))
    rates.plot(epochs, series("last_lr"), "o-", markersize=3, color="C2", label="learning rate")
    rates.set(ylabel="learning rate (last step of the epoch)", title="Learning rate and momentum")
    rates.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    handles = rates.get_lines()
    beta1 = series("last_beta1")
    if not np.isnan(beta1).all():
        momentum = rates.twinx()
        handles += momentum.plot(epochs, beta1, "s--", markersize=3, color="C4", label="beta1 / momentum")
        momentum.set_ylabel("beta1 (Adam) / momentum (SGD)")
    if not np.isnan(test_acc).all():
        best = int(np.nanargmax(test_acc))
        for axes in (loss, accuracy, rates):
            axes.axvline(epochs[best], color="0.5", linestyle=":", linewidth=1, label="best test accuracy")
        accuracy.plot([epochs[best]], [test_acc[best]], "*", color="C3", markersize=12, zorder=5,
                      label=f"best {test_acc[best]:.4f} (epoch {epochs[best]})")
    ticks = epoch_ticks(max(epochs))
    for axes in (loss, accuracy, rates):
        axes.set_xticks(ticks)
        axes.set_xlim(0.5, max(epochs) + 0.5)
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
    loss.legend(fontsize=8)
    accuracy.legend(fontsize=8, loc="lower right")
    rates.legend(handles=handles, fontsize=8, loc="best")
    figure.suptitle(title)
    return figure


def write_curves(workdir) -> pathlib.Path:
    """WORKDIR/curves.png from WORKDIR/metrics.jsonl (curves_figure)."""
    records = read_metrics(workdir)
    if not records:
        raise CifarJaxError(f"{pathlib.Path(workdir) / METRICS_FILE} holds no epochs yet")
    figure = curves_figure(records, pathlib.Path(workdir).absolute().name)
    return save_png(figure, pathlib.Path(workdir) / CURVES_FILE, dpi=120)


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
