"""Opening files in folders that other users may write to (a shared CIFAR_JAX_DATA, a
shared TORCH_HOME) without being tricked into writing or reading somewhere else.

A name planted there beforehand could be a symbolic link to a file of the user who
downloads (the transfer would append to it or overwrite it), a FIFO (opening it would
block) or another user's file. `open_no_follow` refuses all three in one line; the
folders above the file may still be links (a data folder on another disk is common).
"""
from __future__ import annotations

import errno
import fcntl
import os
import pathlib
import stat


class UnsafeFile(Exception):
    """A file name that is a link, not a regular file, or (where that matters) another user's."""


def open_no_follow(path: pathlib.Path, flags: int, *, mine: bool = True) -> int:
    """An fd of `path` opened with `flags` (os.O_*), not following a link at `path` itself.

    Refuses (UnsafeFile) a symbolic link, anything but a regular file, and, when `mine`,
    a file owned by another user. Other OSErrors (missing file, no permission, full disk)
    pass through unchanged.
    """
    try:
        # O_NONBLOCK: opening a planted FIFO returns at once (and is refused below) instead of
        # waiting for a writer; it is cleared again for the regular file that passes.
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as error:
        if error.errno == errno.ELOOP and os.path.islink(path):
            raise UnsafeFile(_refusal(path, f"it is a symbolic link (to {_link_target(path)})")) from None
        if error.errno == errno.ENXIO:  # a FIFO without a reader, opened for writing
            raise UnsafeFile(_refusal(path, "it is not a regular file")) from None
        raise
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise UnsafeFile(_refusal(path, "it is not a regular file"))
        if mine and status.st_uid != os.geteuid():
            raise UnsafeFile(_refusal(path, f"it belongs to another user (uid {status.st_uid})"))
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _link_target(path: pathlib.Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _refusal(path: pathlib.Path, problem: str) -> str:
    return (f"refusing {path}: {problem}, not a file cifar_jax wrote; someone who can write to "
            f"{path.parent} may have put it there: remove it, then run again")
