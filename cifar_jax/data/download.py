"""Downloading the official CIFAR archives (or a mirror's copy) into data_dir.

The file is fetched into ARCHIVE.part, resumed by an HTTP Range request after a broken
transfer or an interrupted run, checked against the official md5 and only then renamed to
ARCHIVE, so the archive's own name never holds a partial or wrong file. A lock file next
to it lets one process download while others wait. docs/data.md tells users the rest.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import pathlib
import sys
import time
import urllib.parse

from tqdm import tqdm

from cifar_jax.data.cifar_archive import CifarVariant, find_cifar, md5_of
from cifar_jax.data.http_transfer import (Broken, DiskProblem, NoConnection, RangeNotSatisfiable, Refused,
                                          TransferError, fetch_into)
from cifar_jax.errors import DataError, one_line

DATA_DIR_ENV = "CIFAR_JAX_DATA"
DATA_URL_ENV = "CIFAR_JAX_DATA_URL"
DEFAULT_DATA_DIR = "~/.cache/cifar_jax/datasets"  # per user: one download per machine and user
DEFAULT_TIMEOUT_S = 60.0
MAX_FAILURES = 5  # failed attempts in a row; one that got further than any before starts the count anew
BACKOFF_S = 2.0  # the wait after a first failure, doubled after each further one in a row
MAX_BACKOFF_S = 30.0
SLOW_ETA_S = 300.0  # an ETA longer than this prints, once, how to avoid the wait
ETA_AFTER_S = 10.0  # judged on at least this much transfer time (the rate is noisy at first)


class DownloadError(DataError):
    """A download that failed; the message names the URL or path, the problem and the fix."""


@dataclasses.dataclass(frozen=True)
class Options:
    """The command-line options that set the mirror and the folder, as messages name them."""

    url: str = "--config.data_url"
    data_dir: str = "--config.data_dir"
    joiner: str = "="  # between an option and its value: --config.data_url=URL, --url URL

    def set(self, option: str, value: str) -> str:
        return f"{option}{self.joiner}{value}"

    @property
    def mirror_hint(self) -> str:
        return f"use a mirror with {self.set(self.url, 'URL')} or {DATA_URL_ENV}=URL"

    @property
    def data_dir_hint(self) -> str:
        return f"pass {self.set(self.data_dir, 'DIR')} or set {DATA_DIR_ENV}=DIR"


TRAINING_OPTIONS = Options()


def resolve_data_dir(configured: str) -> pathlib.Path:
    """`configured`, else $CIFAR_JAX_DATA, else the per-user cache; absolute."""
    chosen = configured or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return pathlib.Path(chosen).expanduser().absolute()


def resolve_url(variant: CifarVariant, configured: str, options: Options = TRAINING_OPTIONS) -> str:
    """`configured`, else $CIFAR_JAX_DATA_URL, else the official URL. A URL that ends in "/"
    is a folder holding the archive, so one setting serves CIFAR-10 and CIFAR-100."""
    url = configured or os.environ.get(DATA_URL_ENV) or variant.url
    if url.endswith("/"):
        url += variant.archive
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        given = options.set(options.url, repr(url)) if configured else f"{DATA_URL_ENV}={url!r}"
        raise DownloadError(f"{given} is not an http:// or https:// URL; give a mirror's URL of "
                            f"{variant.archive}, or copy the file into data_dir instead")
    return url


def fetch_cifar(variant: CifarVariant, data_dir: pathlib.Path, url: str, timeout: float = DEFAULT_TIMEOUT_S,
                options: Options = TRAINING_OPTIONS) -> pathlib.Path:
    """The archive or extracted folder of `variant` in `data_dir`; when neither is there, the
    archive is downloaded from `url` first (or, while another process downloads it, awaited)."""
    archive = data_dir / variant.archive
    lock = data_dir / f"{variant.archive}.lock"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:
        raise DownloadError(f"cannot write to {data_dir} ({one_line(error)}); {variant.archive} needs a "
                            f"writable folder with {variant.size / 1e6:.0f} MB free: {options.data_dir_hint}") from None
    with _exclusive(lock_fd, variant, data_dir):
        found = find_cifar(variant, data_dir)
        if found is not None:
            return found  # another process finished it while this one waited
        _download(variant, url, archive, timeout, options)
        # Only after a success: a waiting process then finds the archive, not a new lock.
        lock.unlink(missing_ok=True)
    return archive


@contextlib.contextmanager
def _exclusive(lock_fd: int, variant: CifarVariant, data_dir: pathlib.Path):
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another process that is downloading {variant.archive} into {data_dir}")
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
        except OSError as error:  # e.g. ENOLCK on a file system without locks: go on unguarded
            say(f"cannot lock {data_dir} ({one_line(error)}); downloading without a lock")
        yield
    finally:
        os.close(lock_fd)  # releases the lock


def _download(variant: CifarVariant, url: str, archive: pathlib.Path, timeout: float, options: Options) -> None:
    part = archive.with_name(f"{archive.name}.part")
    progress = Progress(archive, options)
    say(f"downloading {url} to {archive}")
    failures = 0
    furthest = _size(part)  # progress is a part file longer than ever before, not bytes received:
    try:                    # a server that ignores Range and drops at one spot must not loop forever
        while True:
            try:
                fetch_into(url, part, timeout, progress.start, progress.advance)
                break
            except RangeNotSatisfiable as error:
                if part.exists() and md5_of(part) == variant.md5:
                    break  # an earlier run received every byte and stopped before the rename
                part.unlink(missing_ok=True)  # longer than the file, or another file: start over
                problem = error
            except Broken as error:
                problem = error
            except (NoConnection, Refused, DiskProblem) as error:
                raise DownloadError(_fatal_message(error, variant, url, archive, part, options)) from None
            failures = 1 if _size(part) > furthest else failures + 1
            furthest = max(furthest, _size(part))
            if failures >= MAX_FAILURES:
                kept = f" (the {_size(part) / 1e6:.1f} MB in {part} are kept and resumed)" if _size(part) else ""
                raise DownloadError(
                    f"downloading {url} failed {failures} times in a row (last: {problem}); try again later"
                    f"{kept}, {options.mirror_hint}, or fetch {variant.archive} elsewhere and put it at "
                    f"{archive}") from None
            delay = min(BACKOFF_S * 2 ** (failures - 1), MAX_BACKOFF_S)
            progress.close()
            say(f"{archive.name}: {problem}; trying again in {delay:g} s")
            time.sleep(delay)
    except KeyboardInterrupt:
        progress.close()
        say(f"download interrupted; {part} keeps what arrived: run again to resume")
        raise
    finally:
        progress.close()
    try:
        _accept(variant, url, part, archive)
    except OSError as error:  # reading back, syncing or renaming the finished file
        raise DownloadError(f"cannot finish {archive} from {part} ({one_line(error)}); check the disk and "
                            "run again") from None


def _fatal_message(error: TransferError, variant: CifarVariant, url: str, archive: pathlib.Path,
                   part: pathlib.Path, options: Options) -> str:
    elsewhere = f"fetch {variant.archive} elsewhere and put it at {archive}"
    if isinstance(error, NoConnection):
        return f"cannot connect to {url} ({error}); offline? {elsewhere}, or {options.mirror_hint}"
    if isinstance(error, DiskProblem):
        needed = (f"{error.needed_bytes / 1e6:.1f} MB more" if error.needed_bytes is not None
                  else f"about {variant.size / 1e6:.0f} MB in all")
        return (f"{error}: the download needs {needed}; free space there, or {options.data_dir_hint} on a disk "
                f"with room; {part.name} is kept to resume from")
    return f"downloading {url} failed: {error}; check the URL ({options.mirror_hint}), or {elsewhere}"


def _accept(variant: CifarVariant, url: str, part: pathlib.Path, archive: pathlib.Path) -> None:
    """Renames `part` to `archive` if it has the official md5; deletes it otherwise."""
    actual = md5_of(part)
    if actual != variant.md5:
        part.unlink()
        raise DownloadError(f"the file from {url} has md5 {actual}, expected {variant.md5} (the official "
                            f"{variant.archive}); it was deleted. Check the mirror, or fetch the official "
                            f"file elsewhere and put it at {archive}")
    with open(part, "rb") as file:
        os.fsync(file.fileno())  # the bytes are on disk before the name says the file is complete
    os.replace(part, archive)


class Progress:
    """A bar with MB, rate and ETA per attempt, and a one-time hint when the ETA is long."""

    def __init__(self, archive: pathlib.Path, options: Options, hint_slow: bool = True):
        self._archive, self._options = archive, options
        self._bar = None
        self._hinted = not hint_slow  # the hint names CIFAR mirrors: other downloads pass False

    def start(self, total: int | None, have: int) -> None:
        self.close()
        self._total, self._done = total, have
        self._started, self._received = time.monotonic(), 0
        self._bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=self._archive.name,
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
            say(f"{self._archive.name}: about {eta / 60:.0f} min to go at {rate / 1e3:.0f} kB/s. Rather than "
                 f"wait: stop with Ctrl-C (what arrived is kept) and {self._options.mirror_hint} (md5-checked, "
                 f"resumed from here), or fetch {self._archive.name} elsewhere and put it at {self._archive}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _size(path: pathlib.Path) -> int:
    return path.stat().st_size if path.exists() else 0


def say(text: str) -> None:
    tqdm.write(text, file=sys.stderr)
