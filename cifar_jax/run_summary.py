"""What a training command prints when it ends: the run's accuracy, its speed, where its
files are and the commands that read them; and, for a run that was already complete, how
to train it longer. Text only, from metrics.jsonl's records (imports no JAX).
"""
from __future__ import annotations

import pathlib
import shlex
from typing import Sequence

from cifar_jax.invocation import command_line
from cifar_jax.run_layout import CHECKPOINT_DIR, CONFIG_FILE, CURVES_FILE, METRICS_FILE, TENSORBOARD_DIR


def duration(seconds: float) -> str:
    """12.3 s, 4 min 05 s, 2 h 07 min."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes = int(round(seconds)) // 60
    if minutes < 120:
        return f"{minutes} min {int(round(seconds)) % 60:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _best(records: Sequence[dict]) -> dict:
    """The record of the best test accuracy (the earliest of equal ones)."""
    return max(records, key=lambda r: (r["test_acc"], -r["epoch"]))


def _speed(trained: Sequence[dict], num_train: int) -> str:
    """Train images per second over the epochs this command trained; the first of them
    also compiled the steps, so it is left out when there are others."""
    steady = trained[1:] or trained
    seconds = sum(r["train_seconds"] for r in steady)
    if seconds <= 0:
        return ""
    rate = num_train * len(steady) / seconds
    which = "one epoch, compiling included" if len(steady) == len(trained) else (
        f"the {len(steady)} epoch{'s' if len(steady) > 1 else ''} after the first, which also compiled")
    return f"{rate:,.0f} train images/s ({which})"


def summary(workdir, records: Sequence[dict], num_epochs: int, trained: Sequence[dict], wall_seconds: float,
            num_train: int) -> str:
    """The lines a run prints at its end. `records` are metrics.jsonl's (every epoch of the
    run), `trained` those this command trained, `wall_seconds` the command's own time."""
    path = pathlib.Path(workdir)
    last, best = records[-1], _best(records)
    done = len(records)
    counted = f"{done} of {num_epochs}" if done < num_epochs else f"{done}"
    lines = [f"Run finished: {counted} epochs trained, in {path}"]
    best_text = ("the run's best" if best is last else
                 f"best {best['test_acc']:.4f} after epoch {best['epoch'] + 1} (Epoch [{best['epoch']}] in the log)")
    lines.append(f"  test top-1   {last['test_acc']:.4f} after the last epoch ({done}), {best_text}")
    if trained:
        lines.append(f"  time         {duration(wall_seconds)} wall for this command, which trained {len(trained)} "
                     f"epoch{'s' if len(trained) > 1 else ''}")
        speed = _speed(trained, num_train)
        if speed:
            lines.append(f"  speed        {speed}")
    else:
        lines.append("  time         nothing was trained by this command")
    lines.append(f"  checkpoints  {path / CHECKPOINT_DIR}   (evaluate the best: "
                 f"{command_line('evaluate', '--workdir', path, '--best')})")
    lines.append(f"  metrics      {path / METRICS_FILE}")
    if (path / CURVES_FILE).is_file():
        lines.append(f"  curves       {path / CURVES_FILE}")
    if (path / TENSORBOARD_DIR).is_dir():
        logdir = path / TENSORBOARD_DIR
        lines.append(f"  TensorBoard  {logdir}   (pip install tensorboard; "
                     f"{command_line_of('tensorboard', '--logdir', logdir)})")
    return "\n".join(lines)


def already_complete(workdir, epochs_done: int, step: int, num_epochs: int) -> str:
    """The line for a rerun of a finished run: nothing to train, and the command that trains
    it longer (with the run's own config.json, so it runs whatever config file started it)."""
    path = pathlib.Path(workdir)
    more = max(2 * epochs_done, num_epochs + 1)
    extend = command_line("train", "--config", path / CONFIG_FILE, "--workdir", path, f"--config.num_epochs={more}")
    return (f"The run in {path} is already complete: {epochs_done} epochs trained (checkpoint step {step}, "
            f"num_epochs={num_epochs}); nothing was trained.\n"
            f"To train it longer, raise num_epochs, e.g. to {more}: {extend}")


def command_line_of(program: str, *args) -> str:
    """A command of another program, quoted for a POSIX shell."""
    return " ".join([program, *(shlex.quote(str(arg)) for arg in args)])
