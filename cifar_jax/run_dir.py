"""What a run's workdir holds (config.json, metrics.jsonl) and whether a run may use it:
the checks a training run, and `--dry-run`, make before anything is written."""
from __future__ import annotations

import json
import pathlib
import warnings

from cifar_jax import run_files
from cifar_jax.config import training_changes
from cifar_jax.errors import CifarJaxError

CONFIG_FILE = "config.json"  # the resolved config of the run
METRICS_FILE = "metrics.jsonl"  # one JSON object per finished epoch


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


class MetricsWarning(UserWarning):
    """metrics.jsonl ended in a torn line, which was left out."""


def metric_lines(path: pathlib.Path) -> list[tuple[str, dict]]:
    """(line, record) of every epoch record in WORKDIR/metrics.jsonl, in file order.

    A crash or a full disk while a line was appended can leave the last line torn: it is
    left out, with a MetricsWarning. Any other line that is not an epoch record (a JSON
    object with an integer "epoch") is damage no crash leaves: CifarJaxError naming it.
    """
    file = path / METRICS_FILE
    try:
        raw = file.read_bytes().split(b"\n")
    except OSError as error:
        raise CifarJaxError(f"cannot read {file} ({error.strerror or error}); check the file") from None
    numbered = [(number, line) for number, line in enumerate(raw, 1) if line.strip()]
    records = []
    for number, line in numbered:
        record = _epoch_record(line)
        if record is not None:
            records.append((line.decode(), record))
        elif number == numbered[-1][0]:
            warnings.warn(f"{file} line {number} is torn (a crash or a full disk while it was written): left "
                          "out; the epoch it recorded is trained again if no checkpoint has it", MetricsWarning,
                          stacklevel=2)
        else:
            raise CifarJaxError(f"{file} line {number} is not an epoch record; the file is damaged: restore it "
                                "from a copy of the run, or delete that line")
    return records


def _epoch_record(line: bytes) -> dict | None:
    try:
        record = json.loads(line.decode())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    ok = isinstance(record, dict) and isinstance(record.get("epoch"), int) and not isinstance(record["epoch"], bool)
    return record if ok else None


def keep_metrics_before(path: pathlib.Path, epoch: int) -> None:
    """Drops metric lines of epochs that a resumed run will train again, and a torn last line."""
    file = path / METRICS_FILE
    if file.exists():
        text = "".join(line + "\n" for line, record in metric_lines(path) if record["epoch"] < epoch)
        if text.encode() != file.read_bytes():
            run_files.write_text_atomically(file, text)
