"""One training process per workdir: an exclusive `flock` on WORKDIR/.lock.

The kernel drops the lock when the process that holds it ends, however it ends (exit,
crash, SIGKILL), so there is no stale lock to detect. The file's text (pid, host) only
names the holder in the refusal. `release` deletes the file while still holding the
lock, so that a workdir a failed run created can be removed again; `acquire` therefore
checks that the file it locked is still the one at that path, and retries otherwise.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import pathlib
import socket

from cifar_jax.errors import CifarJaxError

LOCK_FILE = ".lock"


class WorkdirLocked(CifarJaxError):
    """Another process (or this one) trains in this workdir."""


@dataclasses.dataclass(frozen=True)
class WorkdirLock:
    path: pathlib.Path
    fd: int  # open, and flock'ed, until `release`


def holder(workdir) -> str | None:
    """Who holds WORKDIR's lock ("training process PID", with the host when another), or
    None when it is free. Only looks: the lock is not kept, and no file is created."""
    path = pathlib.Path(workdir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None  # no lock file: nobody holds it
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return str(_refusal(workdir, path))
    except OSError:
        return None
    finally:
        os.close(fd)


def _refusal(workdir, path: pathlib.Path) -> WorkdirLocked:
    try:
        fields = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        pid, host = int(fields["pid"]), fields.get("host", "")
    except (OSError, ValueError, KeyError, UnicodeDecodeError):  # not written yet, or torn
        pid, host = None, ""
    if pid == os.getpid() and host == socket.gethostname():
        return WorkdirLocked(f"workdir {workdir} is already in use by this process; "
                             "finish that run before starting another in it")
    who = f"training process {pid}" if pid else "another training process"
    where = f" on host {host}" if host and host != socket.gethostname() else ""
    return WorkdirLocked(f"workdir {workdir} is in use by {who}{where} ({path}); wait for it to "
                         "finish or stop it, or pass another --workdir")


def acquire(workdir) -> WorkdirLock:
    """Locks WORKDIR/.lock for this process; WorkdirLocked if another holds it."""
    path = pathlib.Path(workdir) / LOCK_FILE
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise CifarJaxError(f"cannot create the lock file {path} ({os.strerror(error.errno)}); "
                                "pass a writable --workdir") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        except BlockingIOError:
            os.close(fd)
            raise _refusal(workdir, path) from None
        except FileNotFoundError:  # deleted by its releasing holder since we opened it
            pass
        except OSError as error:  # e.g. a file system without locks
            os.close(fd)
            raise CifarJaxError(f"cannot lock {path} ({os.strerror(error.errno)}); "
                                "pass a --workdir on a local disk") from None
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid={os.getpid()}\nhost={socket.gethostname()}\n".encode())
    except OSError as error:  # e.g. a full disk: no empty lock file left behind
        release(WorkdirLock(path, fd))
        raise CifarJaxError(f"cannot write the lock file {path} ({os.strerror(error.errno)}); "
                            "free space on that disk or pass another --workdir") from None
    return WorkdirLock(path, fd)


def release(lock: WorkdirLock) -> None:
    """Deletes the lock file (if it is still ours) and unlocks it."""
    with contextlib.suppress(OSError):
        if os.path.samestat(os.fstat(lock.fd), os.stat(lock.path)):
            os.unlink(lock.path)
    os.close(lock.fd)
