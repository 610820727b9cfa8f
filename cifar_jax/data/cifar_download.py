"""Downloading the official CIFAR archives (or a mirror's copy) into data_dir.

The file is fetched by cifar_jax.data.fetch (into ARCHIVE.part, resumed, under a lock) and
checked against the official md5 before it is renamed to ARCHIVE; this module names the
folder, the URL and the CIFAR-specific advice of each message. docs/data.md tells users the rest.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import urllib.parse

from cifar_jax.data.cifar_archive import CifarVariant, find_cifar
from cifar_jax.data.fetch import Wording, digest_of, fetch_verified
from cifar_jax.data.http_transfer import DiskProblem, NoConnection, TooSlow, TransferError
from cifar_jax.errors import DataError

DATA_DIR_ENV = "CIFAR_JAX_DATA"
DATA_URL_ENV = "CIFAR_JAX_DATA_URL"
DEFAULT_DATA_DIR = "~/.cache/cifar_jax/datasets"  # per user: one download per machine and user
DEFAULT_TIMEOUT_S = 60.0


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
    part = data_dir / f"{variant.archive}.part"
    elsewhere = f"fetch {variant.archive} elsewhere and put it at {archive}"

    def kept() -> str:
        """What the part file holds now: never more than the archive's size (the transfer stops there)."""
        size = part.lstat().st_size if part.is_file() and not part.is_symlink() else 0
        return (f"{part.name} keeps the {size / 1e6:.1f} MB received: the next run resumes from it and checks "
                "the md5 at the end (delete it to start over)" if size else "nothing was kept")

    def fatal(error: TransferError) -> str:
        if isinstance(error, NoConnection):
            return f"cannot connect to {url} ({error}); offline? {elsewhere}, or {options.mirror_hint}"
        if isinstance(error, DiskProblem):
            # needed_bytes comes from the archive's known size (a server's other claims are refused)
            needed = (f"{error.needed_bytes / 1e6:.1f} MB more" if error.needed_bytes is not None
                      else f"{variant.size / 1e6:.1f} MB in all")
            return (f"{error}: the download needs {needed}; free space there, or {options.data_dir_hint} on a "
                    f"disk with room; {kept()}")
        if isinstance(error, TooSlow):
            return (f"downloading {url} is far too slow to finish: {error}; {options.mirror_hint}, or {elsewhere}; "
                    f"{kept()}")
        return f"downloading {url} failed: {error}; check the URL ({options.mirror_hint}), or {elsewhere}"

    def verify(file) -> str | None:
        actual = digest_of(file, "md5")
        return None if actual == variant.md5 else (f"has md5 {actual}, expected {variant.md5} (the official "
                                                   f"{variant.archive})")

    wording = Wording(
        DownloadError, fatal=fatal, retry=f"{options.mirror_hint}, or {elsewhere}",
        unwritable=(f"; {variant.archive} needs a writable folder with {variant.size / 1e6:.1f} MB free: "
                    f"{options.data_dir_hint}"),
        invalid=f"Check the mirror, or fetch the official file elsewhere and put it at {archive}",
        slow=(f"stop with Ctrl-C (what arrived is kept) and {options.mirror_hint} (md5-checked, resumed from "
              f"here), or {elsewhere}"))
    return fetch_verified(url, archive, timeout=timeout, verify=verify, wording=wording,
                          found=lambda: find_cifar(variant, data_dir), size=variant.size)
