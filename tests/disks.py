"""Small real file systems that fill up: a tmpfs of a given size (needs root; tests skip
with the reason where the machine cannot mount one)."""
from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import subprocess
import uuid

import pytest


@contextlib.contextmanager
def tiny_disk(path: pathlib.Path, size: str):
    """Mounts a tmpfs of `size` (e.g. "9m") at `path` for the block."""
    path.mkdir(parents=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", f"cifar-jax-{uuid.uuid4().hex[:8]}",
                             str(path)], capture_output=True, text=True)
    if result.returncode:
        pytest.skip(f"cannot mount a small tmpfs here to fill up ({result.stderr.strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: pathlib.Path) -> pathlib.Path:
    """Writes a filler file until the disk is full (ENOSPC); returns it."""
    filler = disk / f"filler-{uuid.uuid4().hex[:8]}"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
    try:  # the last pages, in smaller pieces
        while True:
            os.write(fd, b"\0" * 512)
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    return filler
