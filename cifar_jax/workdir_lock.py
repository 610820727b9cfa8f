"""One training process per workdir: WORKDIR/.lock, created with O_EXCL, names its owner.

The file holds the owner's pid, its start time (from /proc, so a reused pid is not taken
for the owner) and the host name. A lock whose owner is gone (killed, crashed, machine
restarted) is stale and taken over.
"""
from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import socket

from cifar_jax.errors import CifarJaxError

LOCK_FILE = ".lock"


class WorkdirLocked(CifarJaxError):
    """Another live process trains in this workdir."""


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot ('' where /proc is absent)."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def _alive(pid: int, start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    return not start or not _start_time(pid) or _start_time(pid) == start


def _owner(path: pathlib.Path):
    """(pid, start, host) from a lock file; None if unreadable or malformed."""
    try:
        fields = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        return int(fields["pid"]), fields.get("start", ""), fields.get("host", "")
    except (OSError, ValueError, KeyError, UnicodeDecodeError):
        return None


def acquire(workdir) -> pathlib.Path:
    """Creates WORKDIR/.lock for this process; WorkdirLocked if a live process holds it."""
    path = pathlib.Path(workdir) / LOCK_FILE
    me = f"pid={os.getpid()}\nstart={_start_time(os.getpid())}\nhost={socket.gethostname()}\n"
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            owner = _owner(path)
            if owner is not None:
                pid, start, host = owner
                if pid == os.getpid() and start == _start_time(pid):
                    raise WorkdirLocked(f"workdir {workdir} is already in use by this process; "
                                        "finish that run before starting another in it")
                if host and host != socket.gethostname():
                    raise WorkdirLocked(
                        f"workdir {workdir} is in use by process {pid} on host {host} ({path}); "
                        f"wait for it to finish, or delete {path} if no run is going on there")
                if _alive(pid, start):
                    raise WorkdirLocked(
                        f"workdir {workdir} is in use by training process {pid} ({path}); wait for "
                        f"it to finish or stop it, or pass another --workdir")
            # Stale (its owner has exited) or unreadable: take it over.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            continue
        except OSError as error:
            raise CifarJaxError(f"cannot create the lock file {path} ({os.strerror(error.errno or errno.EIO)}); "
                                "pass a writable --workdir") from None
        try:
            with os.fdopen(fd, "w") as f:
                f.write(me)
        except OSError as error:  # e.g. a full disk: no empty lock file left behind
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise CifarJaxError(f"cannot write the lock file {path} ({os.strerror(error.errno or errno.EIO)}); "
                                "free space on that disk or pass another --workdir") from None
        return path
    raise WorkdirLocked(f"workdir {workdir}: could not take over the lock file {path}; delete it and retry")


def release(path: pathlib.Path) -> None:
    """Deletes the lock file if this process still owns it."""
    owner = _owner(path)
    if owner is not None and owner[0] == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
