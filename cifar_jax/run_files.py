"""Writing a run's small files (config.json, metrics.jsonl, plots) so that a full disk or
an unwritable workdir ends in one clear error and never leaves a torn file behind.

Whole files are written to a temporary name and renamed over the old one; appended lines
are cut back off if they did not fit.
"""
from __future__ import annotations

import contextlib
import errno
import os
import pathlib

from cifar_jax.errors import CifarJaxError


class RunFileWriteError(CifarJaxError, OSError):
    """A file of the run could not be written (disk full, read-only folder, ...)."""


def write_error(path, error: OSError) -> RunFileWriteError:
    """The one-line error for an OSError raised while writing `path`."""
    reason = os.strerror(error.errno) if error.errno else str(error).splitlines()[0]
    fix = ("free space on that disk" if error.errno in (errno.ENOSPC, errno.EDQUOT)
           else "make it writable")
    return RunFileWriteError(f"could not write {path} ({reason}); {fix} or pass another --workdir; "
                             "the files written before it are intact")


def write_text_atomically(path, text: str) -> None:
    """`path` holds `text` afterwards, or, on error, what it held before."""
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())  # a full disk shows up here on some file systems
        os.replace(tmp, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise write_error(path, error) from None


def append_line(path, line: str) -> None:
    """Appends `line` and a newline; on error the file is cut back to its old length."""
    path = pathlib.Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        size = 0
    try:
        with open(path, "a") as file:
            file.write(line + "\n")
            file.flush()
            os.fsync(file.fileno())
    except OSError as error:
        with contextlib.suppress(OSError):
            os.truncate(path, size)
        raise write_error(path, error) from None
