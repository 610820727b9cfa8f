"""One HTTP(S) GET of a file into `ARCHIVE.part`, continued by a `Range` request when the
part file already holds bytes.

Redirects are followed here rather than by urllib, so that every hop is checked for loops
and carries the Range header. `Limits` bounds the bytes (by the file's known size) and the
time (by a minimum rate) of a transfer. Each way a transfer can fail raises its own
exception below; retrying, messages and checking the result are cifar_jax.data.fetch's job.
"""
from __future__ import annotations

import dataclasses
import http.client
import os
import pathlib
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable

from cifar_jax.data.safe_open import open_no_follow
from cifar_jax.errors import one_line

MAX_REDIRECTS = 10  # urllib's own limit; a chain longer than this is a misconfigured mirror
CHUNK_BYTES = 1 << 16
USER_AGENT = "cifar_jax (python urllib)"
_REDIRECT_CODES = (301, 302, 303, 307, 308)
_RETRYABLE_CODES = (408, 429)  # plus every 5xx: the server may answer differently later


class TransferError(Exception):
    """A failed transfer; str() is the problem in a few words, without a fix."""


class NoConnection(TransferError):
    """No connection was made (DNS failure, refused, unreachable, connect timeout, TLS)."""


class Refused(TransferError):
    """The server answered in a way that another attempt would not change (4xx, bad redirects)."""


class Broken(TransferError):
    """Worth another attempt: a dropped connection, a read timeout, a 5xx answer."""


class TooLong(Refused):
    """The body grew past the size the file has (or can have): it is not the file."""


class TooSlow(TransferError):
    """The transfer is far too slow to finish: another attempt from this server would not help."""


class RangeNotSatisfiable(TransferError):
    """HTTP 416: the part file is as long as the file (or longer), so nothing is left to send."""


class DiskProblem(TransferError):
    """The part file cannot be written: a full disk, no permission, a read-only file system."""

    def __init__(self, path: pathlib.Path, reason: str, needed_bytes: int | None):
        super().__init__(f"cannot write {path} ({reason})")
        self.path, self.reason, self.needed_bytes = path, reason, needed_bytes


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # urllib then raises HTTPError with the 3xx code, which _open follows


_OPENER = urllib.request.build_opener(_NoRedirects)  # keeps proxies from the environment


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one file's transfer may take. A byte limit keeps a server that sends an endless
    (or a wrong, longer) body from filling the disk; the rate rule ends a transfer that
    would not finish in any useful time, which the per-read timeout alone does not catch
    (a server that sends a byte every few seconds never stalls for long)."""

    size: int | None = None  # the file's exact size, when known (the CIFAR archives)
    most: int | None = None  # else at most this many bytes
    window_s: float = 60.0  # the rate is measured over each window of this many seconds...
    max_eta_s: float = 86400.0  # ...and the transfer ends when the rest would take longer than this

    @property
    def limit(self) -> int | None:
        return self.size if self.size is not None else self.most


def fetch_into(url: str, part: pathlib.Path, timeout: float,
               on_start: Callable[[int | None, int], None], on_bytes: Callable[[int], None],
               limits: Limits = Limits()) -> None:
    """Downloads `url` into `part`, appending to what it holds if the server honours Range.

    `timeout` bounds connecting and every read. `on_start(total, have)` is called once the
    answer is known (total: the file's size, None when neither the server nor `limits`
    says), `on_bytes(n)` after each write. The part file is opened without following a
    link (safe_open: UnsafeFile for a link, a FIFO or another user's file). A size the
    server announces that disagrees with `limits` is refused before anything is written;
    a body longer than `limits.limit` is refused and the part file deleted (it cannot be
    the file). Returns when the body is complete; the caller checks the content.
    """
    file = _open_part(part, create=False)
    try:
        have = os.fstat(file.fileno()).st_size if file is not None else 0
        response = _open(url, have, timeout)
        with response:
            if response.status == 206:
                start, total = _content_range(response.headers.get("Content-Range"))
                if start != have:
                    raise Refused(f"asked for bytes from {have:,}, the server sent bytes from {start:,}")
            else:  # 200: the whole file, also when a Range was asked for and ignored: start over
                have, total = 0, _content_length(response)
            total = _checked_total(total, limits)
            _check_space(part, None if total is None else total - have)
            file = file if file is not None else _open_part(part, create=True)
            on_start(total, have)
            try:
                file.truncate(have)
                file.seek(have)
                received = _copy(response, file, on_bytes, have, total, limits)
                file.flush()
            except OSError as error:
                size = os.fstat(file.fileno()).st_size
                raise DiskProblem(part, one_line(error), None if total is None else total - size) from None
            except TooLong:
                part.unlink(missing_ok=True)  # whatever it holds, it is not the file
                raise
    finally:
        if file is not None:
            file.close()
    if total is not None and have + received < total:
        raise Broken(f"the connection closed at byte {have + received:,} of {total:,}")


def _open_part(part: pathlib.Path, create: bool):
    """The part file for reading and writing (None if it does not exist and not `create`)."""
    try:
        return os.fdopen(open_no_follow(part, os.O_RDWR | (os.O_CREAT if create else 0)), "r+b")
    except FileNotFoundError:
        if create:
            raise DiskProblem(part, "its folder vanished", None) from None
        return None
    except OSError as error:  # no permission, a read-only or full file system
        raise DiskProblem(part, one_line(error), None) from None


def _checked_total(total: int | None, limits: Limits) -> int | None:
    """The file's size: as the server announces it, checked against `limits`, else the known one."""
    if total is not None and limits.size is not None and total != limits.size:
        raise Refused(f"the server announces a file of {total:,} bytes, but this file has {limits.size:,}")
    if total is not None and limits.most is not None and total > limits.most:
        raise Refused(f"the server announces a file of {total:,} bytes, but this file has at most "
                      f"{limits.most:,}")
    return limits.size if total is None else total


def _open(url: str, have: int, timeout: float) -> http.client.HTTPResponse:
    """The answer to GET `url` from byte `have`, after following redirects."""
    visited = [url]
    while True:
        headers = {"User-Agent": USER_AGENT}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            return _OPENER.open(urllib.request.Request(url, headers=headers), timeout=timeout)
        except urllib.error.HTTPError as answer:  # before URLError: it is one
            answer.close()
            if answer.code not in _REDIRECT_CODES:
                _raise_for_status(url, visited[0], answer.code, answer.reason)
            url = _redirect_target(url, answer, visited)
            visited.append(url)
        except urllib.error.URLError as error:  # raised before any answer: no connection
            raise NoConnection(one_line(error.reason) if isinstance(error.reason, BaseException)
                               else str(error.reason)) from None
        except (OSError, http.client.HTTPException) as error:  # connected, then no usable answer
            raise Broken(f"no answer ({one_line(error)})") from None


def _raise_for_status(url: str, asked: str, code: int, reason: str):
    problem = f"HTTP {code} {reason}".rstrip() + (f" from {url}" if url != asked else "")
    if code == 416:
        raise RangeNotSatisfiable(problem)
    if code >= 500 or code in _RETRYABLE_CODES:
        raise Broken(problem)
    raise Refused(problem)


def _redirect_target(url: str, answer: urllib.error.HTTPError, visited: list[str]) -> str:
    location = answer.headers.get("Location")
    if not location:
        raise Refused(f"HTTP {answer.code} without a Location to redirect to, from {url}")
    target = urllib.parse.urljoin(url, location)
    if urllib.parse.urlsplit(target).scheme not in ("http", "https"):
        raise Refused(f"{url} redirects to {target}, which is not an http(s) URL")
    if target in visited:
        raise Refused(f"redirect loop: {url} sends back to {target} after {len(visited)} hops")
    if len(visited) > MAX_REDIRECTS:
        raise Refused(f"more than {MAX_REDIRECTS} redirects from {visited[0]}")
    return target


def _copy(response, file, on_bytes, have: int, total: int | None, limits: Limits) -> int:
    received = 0
    room = None if limits.limit is None else limits.limit - have
    window_start, window_bytes = time.monotonic(), 0
    while True:
        try:
            # read1: whatever has arrived, so a stall or Ctrl-C keeps every byte received so far
            chunk = response.read1(CHUNK_BYTES)
        except (OSError, http.client.HTTPException) as error:  # timeouts are OSErrors
            raise Broken(f"the transfer broke at byte {received:,} of this attempt "
                         f"({one_line(error)})") from None
        if not chunk:
            return received
        if room is not None and received + len(chunk) > room:
            raise TooLong(f"the server sent more than the {limits.limit:,} bytes the file "
                          f"{'has' if limits.size is not None else 'can have'}; the part file was deleted")
        file.write(chunk)
        received += len(chunk)
        on_bytes(len(chunk))
        window_bytes += len(chunk)
        elapsed = time.monotonic() - window_start
        if elapsed >= limits.window_s:
            left = (total if total is not None else limits.limit or 0) - have - received
            rate = window_bytes / elapsed
            if left > 0 and left / rate > limits.max_eta_s:
                raise TooSlow(f"only {window_bytes:,} bytes arrived in the last {elapsed:.0f} s "
                              f"({_rate(rate)}); at that rate the remaining {left / 1e6:.1f} MB would take "
                              f"{_duration(left / rate)}")
            window_start, window_bytes = time.monotonic(), 0


def _rate(bytes_per_s: float) -> str:
    return f"{bytes_per_s / 1e3:.1f} kB/s" if bytes_per_s >= 100 else f"{bytes_per_s:.1f} bytes/s"


def _duration(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours / 24:,.0f} days" if hours >= 48 else f"{hours:.0f} hours"


def _check_space(part: pathlib.Path, needed: int | None) -> None:
    """Refuses at once, rather than after a long transfer, when the disk cannot hold the rest."""
    if needed is None:
        return
    free = shutil.disk_usage(part.parent).free
    if free < needed:
        raise DiskProblem(part, f"{free / 1e6:.1f} MB free", needed)


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length", "")
    return int(value) if value.strip().isdigit() else None


def _content_range(value: str | None) -> tuple[int, int | None]:
    """(first byte, total or None) of a `Content-Range: bytes FIRST-LAST/TOTAL` header."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", value or "")
    if not match:
        raise Broken(f"a partial answer with an unreadable Content-Range ({value!r})")
    return int(match[1]), None if match[2] == "*" else int(match[2])
