"""Downloading one checked file into a folder: the CIFAR archives (cifar_jax.data.download)
and torchvision's weights (cifar_jax.torch_hub).

The file is fetched into TARGET.part, resumed by an HTTP Range request after a broken
transfer or an interrupted run, checked (`verify`) and only then synced and renamed to
TARGET, so the target's own name never holds a partial or wrong file. A lock file
TARGET.lock next to it lets one process download while others wait; its holder removes it
when done, and a process that was waiting on it then takes a new one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import pathlib
import sys
import time
from typing import Callable

from tqdm import tqdm

from cifar_jax.data.http_transfer import (Broken, DiskProblem, NoConnection, RangeNotSatisfiable, Refused,
                                          TransferError, fetch_into)
from cifar_jax.errors import one_line

MAX_FAILURES = 5  # failed attempts in a row; one that got further than any before starts the count anew
BACKOFF_S = 2.0  # the wait after a first failure, doubled after each further one in a row
MAX_BACKOFF_S = 30.0
SLOW_ETA_S = 300.0  # an ETA longer than this prints, once, how to avoid the wait
ETA_AFTER_S = 10.0  # judged on at least this much transfer time (the rate is noisy at first)


@dataclasses.dataclass(frozen=True)
class Wording:
    """A caller's part of the one-line messages, and the exception that carries them."""

    error: type[Exception]
    unwritable: str  # after "cannot write to FOLDER (PROBLEM)"
    fatal: Callable[[TransferError], str]  # the whole message: no connection, refused, or a disk problem
    retry: str  # after "downloading URL failed N times in a row (last: PROBLEM); try again later (...), "
    invalid: str  # after "the file from URL has ...; it was deleted. "
    slow: str | None = None  # after "NAME: about N min to go at R kB/s. Rather than wait: "


def fetch_verified(url: str, target: pathlib.Path, *, timeout: float, verify: Callable[[pathlib.Path], str | None],
                   wording: Wording, found: Callable[[], pathlib.Path | None] | None = None) -> pathlib.Path:
    """`target`, downloaded from `url` (or awaited while another process downloads it) unless
    `found()` (default: `target` if it is a file) names what is there after taking the lock.
    `verify(path)` is None for the right file, else what is wrong ("has md5 ...")."""
    found = found or (lambda: target if target.is_file() else None)
    lock = target.with_name(f"{target.name}.lock")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:
        raise wording.error(f"cannot write to {target.parent} ({one_line(error)}){wording.unwritable}") from None
    with _exclusive(lock_fd, target):
        if os.fstat(lock_fd).st_nlink == 0:  # its holder removed it when done: lock the one there now
            return fetch_verified(url, target, timeout=timeout, verify=verify, wording=wording, found=found)
        try:
            there = found()
            if there is not None:
                return there  # another process finished it while this one waited
            _download(url, target, timeout, verify, wording)
        finally:  # success or failure, no lock file is left behind
            lock.unlink(missing_ok=True)
    return target


@contextlib.contextmanager
def _exclusive(lock_fd: int, target: pathlib.Path):
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another process that is downloading {target.name} into {target.parent}")
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
        except OSError as error:  # e.g. ENOLCK on a file system without locks: go on unguarded
            say(f"cannot lock {target.parent} ({one_line(error)}); downloading without a lock")
        yield
    finally:
        os.close(lock_fd)  # releases the lock


def _download(url: str, target: pathlib.Path, timeout: float, verify: Callable[[pathlib.Path], str | None],
              wording: Wording) -> None:
    part = target.with_name(f"{target.name}.part")
    progress = Progress(target, wording.slow)
    say(f"downloading {url} to {target}")
    failures = 0
    furthest = _size(part)  # progress is a part file longer than ever before, not bytes received:
    try:                    # a server that ignores Range and drops at one spot must not loop forever
        while True:
            try:
                fetch_into(url, part, timeout, progress.start, progress.advance)
                break
            except RangeNotSatisfiable as error:
                if part.exists() and verify(part) is None:
                    break  # an earlier run received every byte and stopped before the rename
                part.unlink(missing_ok=True)  # longer than the file, or another file: start over
                problem = error
            except Broken as error:
                problem = error
            except (NoConnection, Refused, DiskProblem) as error:
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
    except KeyboardInterrupt:
        progress.close()
        say(f"download interrupted; {part} keeps what arrived: run again to resume")
        raise
    finally:
        progress.close()
    try:
        wrong = verify(part)
        if wrong is not None:
            part.unlink()
            raise wording.error(f"the file from {url} {wrong}; it was deleted. {wording.invalid}")
        with open(part, "rb") as file:
            os.fsync(file.fileno())  # the bytes are on disk before the name says the file is complete
        os.replace(part, target)
    except OSError as error:  # reading back, syncing or renaming the finished file
        raise wording.error(f"cannot finish {target} from {part} ({one_line(error)}); check the disk and "
                            "run again") from None


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
    return path.stat().st_size if path.exists() else 0


def say(text: str) -> None:
    tqdm.write(text, file=sys.stderr)
