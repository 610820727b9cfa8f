"""Fetch a CIFAR archive ahead of training, the way a training run would, and print its path.

    python -m cifar_jax.download cifar100 [--data-dir DIR] [--url URL] [--timeout SECONDS]

Uses: fetching on a login node before a cluster job, or checking a mirror. Only the path of
the verified archive (or of the extracted folder already there) goes to stdout, so
`ARCHIVE=$(python -m cifar_jax.download cifar100)` works; progress goes to stderr.
Mistakes print one line, `error: ...`, and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys

from cifar_jax.data.cifar_archive import VARIANTS, check_md5, find_cifar
from cifar_jax.data.cifar_download import (DATA_DIR_ENV, DATA_URL_ENV, DEFAULT_DATA_DIR, DEFAULT_TIMEOUT_S,
                                           Options, fetch_cifar, resolve_data_dir, resolve_url)
from cifar_jax.errors import CifarJaxError
from cifar_jax.invocation import command

MAX_TIMEOUT_S = 24 * 3600.0  # as --config.download_timeout allows
OPTIONS = Options(url="--url", data_dir="--data-dir", joiner=" ")  # as this command's messages name them


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print the usage too: keep the one-line contract
        raise _UsageError(f"{message}; see --help")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=command("download"),
                     description="Download and verify (md5) the official CIFAR python archive; print its path.")
    parser.add_argument("dataset", choices=sorted(VARIANTS), help="which archive")
    parser.add_argument("--data-dir", default="",
                        help=f"where to put it (default: ${DATA_DIR_ENV}, else {DEFAULT_DATA_DIR}; "
                             "the same place a training run looks)")
    parser.add_argument("--url", default="",
                        help=f"a mirror of the archive, or a folder URL ending in / (default: ${DATA_URL_ENV}, "
                             "else the official URL); the md5 is checked either way")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="seconds to connect, and the longest a read may stall (default: %(default)g)")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
        if not 0 < args.timeout <= MAX_TIMEOUT_S:
            raise _UsageError(f"--timeout {args.timeout:g} must be positive seconds, at most a day ({MAX_TIMEOUT_S:g})")
    except _UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except SystemExit as done:  # --help
        return done.code if isinstance(done.code, int) else 0
    variant = VARIANTS[args.dataset]
    try:
        data_dir = resolve_data_dir(args.data_dir)
        source = find_cifar(variant, data_dir)
        if source is None:
            url = resolve_url(variant, args.url, OPTIONS)
            source = fetch_cifar(variant, data_dir, url, args.timeout, OPTIONS)
        if source.is_file():
            check_md5(variant, source)  # also an archive placed by hand: this command vouches for it
    except CifarJaxError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted by SIGINT; run the command again to resume the download", file=sys.stderr)
        return 130
    print(source)
    return 0


if __name__ == "__main__":
    sys.exit(main())
