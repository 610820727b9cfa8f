"""What a run's workdir holds (config.json, metrics.jsonl) and whether a run may use it:
the checks a training run, and `--dry-run`, make before anything is written."""
from __future__ import annotations

import json
import pathlib

from cifar_jax import run_files
from cifar_jax.config import training_changes
from cifar_jax.errors import CifarJaxError
from cifar_jax.metrics_file import MetricsWarning, metric_lines
from cifar_jax.run_layout import CONFIG_FILE, METRICS_FILE

__all__ = ["CONFIG_FILE", "METRICS_FILE", "MetricsWarning", "check_workdir", "keep_metrics_before", "metric_lines"]


def check_workdir(workdir: str, config) -> pathlib.Path:
    """The workdir as a Path; refuses a file, or a run trained with a different config."""
    path = pathlib.Path(workdir)
    if path.exists() and not path.is_dir():
        raise CifarJaxError(f"workdir {workdir} is a file; pass a directory to --workdir")
    saved_file = path / CONFIG_FILE
    if saved_file.exists():
        try:
            saved = json.loads(saved_file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CifarJaxError(f"{saved_file} is not readable JSON ({type(error).__name__}); restore it "
                                "from a copy of the run, or pass a new --workdir") from None
        if not isinstance(saved, dict):
            raise CifarJaxError(f"{saved_file} does not hold a config object; pass a new --workdir")
        changed = training_changes(saved, json.loads(config.to_json()))
        if changed:
            raise CifarJaxError(
                f"workdir {workdir} holds a run with a different config ({', '.join(changed)}); "
                "rerun with the same config to resume, or pass a new --workdir"
            )
    elif (path / METRICS_FILE).exists():
        raise CifarJaxError(
            f"workdir {workdir} holds metrics but no {CONFIG_FILE}; pass a new --workdir"
        )
    return path


def keep_metrics_before(path: pathlib.Path, epoch: int) -> None:
    """Drops metric lines of epochs that a resumed run will train again, and a torn last line."""
    file = path / METRICS_FILE
    if file.exists():
        text = "".join(line + "\n" for line, record in metric_lines(path) if record["epoch"] < epoch)
        if text.encode() != file.read_bytes():
            run_files.write_text_atomically(file, text)
