"""Reading WORKDIR/metrics.jsonl, one epoch record per line, as a crash can leave it.

Imports no JAX: `report` reads the file too (run_dir, which checks a workdir against a
config, imports JAX through the config module).
"""
from __future__ import annotations

import json
import pathlib
import warnings

from cifar_jax.errors import CifarJaxError
from cifar_jax.run_layout import METRICS_FILE


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
