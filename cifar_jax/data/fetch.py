"""Downloading one checked file into a folder: the CIFAR archives (cifar_jax.data.cifar_download)
and torchvision's weights (cifar_jax.torch_hub).

The file is fetched into TARGET.part, resumed by an HTTP Range request after a broken
transfer or an interrupted run, checked (`verify`) and only then synced and renamed to
TARGET, so the target's own name never holds a partial or wrong file. A lock file
TARGET.lock next to it lets one process download while others wait; it is deleted when
the download ends, however it ends. The folder may be shared with other users: the part
and lock files are opened without following links (cifar_jax.data.safe_open), the
transfer is bounded by the file's size and a minimum rate (http_transfer.Limits), and a
part file longer than the file can be is deleted rather than resumed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import os
import pathlib
import stat
import sys
import time
from typing import BinaryIO, Callable

from tqdm import tqdm

from cifar_jax.data.http_transfer import (Broken, DiskProblem, Limits, NoConnection, RangeNotSatisfiable, Refused,
                                          TooSlow, TransferError, fetch_into)
from cifar_jax.data.safe_open import UnsafeFile, open_no_follow
from cifar_jax.errors import one_line

MAX_FAILURES = 5  # failed attempts in a row; one that got further than any before starts the count anew
BACKOFF_S = 2.0  # the wait after a first failure, doubled after each further one in a row
MAX_BACKOFF_S = 30.0
SLOW_ETA_S = 300.0  # an ETA longer than this prints, once, how to avoid the wait
ETA_AFTER_S = 10.0  # judged on at least this much transfer time (the rate is noisy at first)
# A transfer ends (TooSlow) when, at the rate of the last RATE_WINDOW_S seconds, the rest of the
# file would take longer than MAX_ETA_S: far too slow to finish, and a mirror is the fix.
RATE_WINDOW_S = 60.0
MAX_ETA_S = 24 * 3600.0


@dataclasses.dataclass(frozen=True)
class Wording:
    """A caller's part of the one-line messages, and the exception that carries them."""

    error: type[Exception]
    unwritable: str  # after "cannot write to FOLDER (PROBLEM)"
    fatal: Callable[[TransferError], str]  # the whole message: no connection, refused, too slow, a disk problem
    retry: str  # after "downloading URL failed N times in a row (last: PROBLEM); try again later (...), "
    invalid: str  # after "the file from URL has ...; it was deleted. "
    slow: str | None = None  # after "NAME: about N min to go at R kB/s. Rather than wait: "


def fetch_verified(url: str, target: pathlib.Path, *, timeout: float, verify: Callable[[BinaryIO], str | None],
                   wording: Wording, found: Callable[[], pathlib.Path | None] | None = None,
                   size: int | None = None, most: int | None = None) -> pathlib.Path:
    """`target`, downloaded from `url` (or awaited while another process downloads it) unless
    `found()` (default: `target` if it is a file) names what is there after taking the lock.
    `verify(file)` reads the finished download (a binary file) and is None for the right
    file, else what is wrong ("has md5 ..."). `size` is the file's exact size when known,
    else `most` bounds it: the transfer never writes more (http_transfer.Limits)."""
    found = found or (lambda: target if target.is_file() else None)
    lock = target.with_name(f"{target.name}.lock")
    limits = Limits(size=size, most=most, window_s=RATE_WINDOW_S, max_eta_s=MAX_ETA_S)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = _take_lock(lock, target)
    except UnsafeFile as error:
        raise wording.error(str(error)) from None
    except OSError as error:
        raise wording.error(f"cannot write to {target.parent} ({one_line(error)}){wording.unwritable}") from None
    try:
        there = found()
        if there is not None:
            return there  # another process finished it while this one waited
        _download(url, target, timeout, verify, wording, limits)
    finally:
        # Deleted while still held, after a failure too: a process waiting on it then finds that
        # its lock is on a deleted file and takes a new one (_take_lock), and no empty lock file
        # is left behind. An unlink refused (another user's lock in a shared folder) is harmless.
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(lock_fd)  # releases the lock
    return target


def _take_lock(lock: pathlib.Path, target: pathlib.Path) -> int:
    """An fd holding an exclusive flock on `lock` (created if missing), waiting for another
    process that holds it. The file is only locked, never written, so another user's lock
    file in a shared folder is used as it is (opened read-only); a link is refused."""
    waited = False
    while True:
        fd = open_no_follow(lock, os.O_RDONLY | os.O_CREAT, mine=False)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not waited:
                    say(f"waiting for another process that is downloading {target.name} into {target.parent}")
                    waited = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as error:  # e.g. ENOLCK on a file system without locks: go on unguarded
                say(f"cannot lock {target.parent} ({one_line(error)}); downloading without a lock")
                return fd
            try:
                if os.path.samestat(os.fstat(fd), os.lstat(lock)):
                    return fd
            except FileNotFoundError:
                pass  # the holder deleted it when done: lock the file now at that name instead
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _download(url: str, target: pathlib.Path, timeout: float, verify: Callable[[BinaryIO], str | None],
              wording: Wording, limits: Limits) -> None:
    part = target.with_name(f"{target.name}.part")
    progress = Progress(target, wording.slow)
    if limits.limit is not None and _size(part) > limits.limit:
        part.unlink()  # longer than the file can be: an earlier server's junk, not a start of it
        say(f"deleted {part}: it was larger than {target.name} can be")
    say(f"downloading {url} to {target}")
    failures = 0
    furthest = _size(part)  # progress is a part file longer than ever before, not bytes received:
    try:                    # a server that ignores Range and drops at one spot must not loop forever
        while True:
            try:
                fetch_into(url, part, timeout, progress.start, progress.advance, limits)
                break
            except RangeNotSatisfiable as error:
                if _size(part) and _check(part, verify) is None:
                    break  # an earlier run received every byte and stopped before the rename
                part.unlink(missing_ok=True)  # longer than the file, or another file: start over
                problem = error
            except Broken as error:
                problem = error
            except (NoConnection, Refused, DiskProblem, TooSlow) as error:
                raise wording.error(wording.fatal(error)) from None
            failures = 1 if _size(part) > furthest else failures + 1
            furthest = max(furthest, _size(part))
            if failures >= MAX_FAILURES:
                kept = f" (the {_size(part) / 1e6:.1f} MB in {part} are kept and resumed)" if _size(part) else ""
                raise wording.error(f"downloading {url} failed {failures} times in a row (last: {problem}); try "
                                    f"again later{kept}, {wording.retry}") from None
            delay = min(BACKOFF_S * 2 ** (failures - 1), MAX_BACKOFF_S)
            progress.close()
            say(f"{target.name}: {problem}; trying again in {delay:g} s")
            time.sleep(delay)
    except UnsafeFile as error:
        raise wording.error(str(error)) from None
    except KeyboardInterrupt:
        progress.close()
        say(f"download interrupted; {part} keeps what arrived: run again to resume")
        raise
    finally:
        progress.close()
    _finish(url, part, target, verify, wording)


def _check(part: pathlib.Path, verify: Callable[[BinaryIO], str | None]) -> str | None:
    with os.fdopen(open_no_follow(part, os.O_RDONLY), "rb") as file:
        return verify(file)


def _finish(url: str, part: pathlib.Path, target: pathlib.Path, verify: Callable[[BinaryIO], str | None],
            wording: Wording) -> None:
    """Checks the finished part file and renames it to `target`; the checked bytes are the
    ones renamed (the name is compared with the open file afterwards), so a part file
    swapped for another while it was checked never ends up under the target's name."""
    try:
        with os.fdopen(open_no_follow(part, os.O_RDONLY), "rb") as file:
            wrong = verify(file)
            if wrong is not None:
                part.unlink()
                raise wording.error(f"the file from {url} {wrong}; it was deleted. {wording.invalid}")
            os.fsync(file.fileno())  # the bytes are on disk before the name says the file is complete
            os.replace(part, target)
            if not os.path.samestat(os.fstat(file.fileno()), os.lstat(target)):
                target.unlink()
                raise wording.error(f"{part} was replaced while it was checked; someone who can write to "
                                    f"{part.parent} is interfering: check that folder, then run again")
    except UnsafeFile as error:
        raise wording.error(str(error)) from None
    except OSError as error:  # reading back, syncing or renaming the finished file
        raise wording.error(f"cannot finish {target} from {part} ({one_line(error)}); check the disk and "
                            "run again") from None


def digest_of(file: BinaryIO, algorithm: str) -> str:
    """The hex digest (hashlib's `algorithm`) of what is left to read in `file`."""
    digest = hashlib.new(algorithm)
    for block in iter(lambda: file.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


class Progress:
    """A bar with MB, rate and ETA per attempt, and a one-time hint (`slow`) when the ETA is long."""

    def __init__(self, target: pathlib.Path, slow: str | None = None):
        self._name, self._slow = target.name, slow
        self._bar = None
        self._hinted = slow is None

    def start(self, total: int | None, have: int) -> None:
        self.close()
        self._total, self._done = total, have
        self._started, self._received = time.monotonic(), 0
        self._bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=self._name,
                         file=sys.stderr, dynamic_ncols=True,
                         mininterval=0.5 if sys.stderr.isatty() else 30.0)  # a log file: few lines

    def advance(self, n: int) -> None:
        self._done += n
        self._received += n
        self._bar.update(n)
        elapsed = time.monotonic() - self._started
        if self._hinted or not self._total or elapsed < ETA_AFTER_S or not self._received:
            return
        rate = self._received / max(elapsed, 1e-9)
        eta = (self._total - self._done) / rate
        if eta > SLOW_ETA_S:
            self._hinted = True
            say(f"{self._name}: about {eta / 60:.0f} min to go at {rate / 1e3:.0f} kB/s. Rather than wait: "
                f"{self._slow}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _size(path: pathlib.Path) -> int:
    """The size of the regular file at `path` itself; 0 for none, a link or anything else
    (which opening it refuses: safe_open)."""
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return 0
    return status.st_size if stat.S_ISREG(status.st_mode) else 0


def say(text: str) -> None:
    tqdm.write(text, file=sys.stderr)
