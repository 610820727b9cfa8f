"""`python -m cifar_jax.download` in a child process, expecting the md5 and size of a test archive.

    python tests/download_child.py MD5 SIZE cifar100 --data-dir DIR --url URL

SIGINT gets Python's default handler back: a test run in the background starts with
SIGINT ignored, and its children inherit that.
"""
import dataclasses
import signal
import sys

signal.signal(signal.SIGINT, signal.default_int_handler)

from cifar_jax import download  # noqa: E402  (after the handler: Ctrl-C may come during imports)
from cifar_jax.data import cifar_archive  # noqa: E402

if __name__ == "__main__":
    md5, size, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    for name, variant in list(cifar_archive.VARIANTS.items()):
        cifar_archive.VARIANTS[name] = dataclasses.replace(variant, md5=md5, size=size)
    sys.exit(download.main(argv))
