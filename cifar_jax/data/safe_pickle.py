"""A restricted unpickler for the official CIFAR "python version" files.

Those files are pickles, and an ordinary `pickle.load` runs whatever callable a file
names, so a tampered download could run code. This unpickler admits only what the
official files (Python 2, protocol 2) and test files written by Python 3 contain:
dicts, lists, str/bytes, ints and numpy arrays. Any other global is refused before it
is ever called.
"""
from __future__ import annotations

import codecs
import io
import pickle

import numpy as np

from cifar_jax.errors import DataError

try:  # numpy >= 2 moved the module; old pickles still name numpy.core.multiarray.
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct


def _encode_latin1(text, encoding):
    # Python 3 writes a bytes object under protocol 2 as _codecs.encode(text, "latin1");
    # admitting _codecs.encode itself would allow any registered codec, so pin it.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r})")
    return codecs.encode(text, "latin1")


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # numpy 1.x and Python 2 files
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy 2
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _encode_latin1,
}


class _CifarUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file, encoding="bytes")  # Python 2 str -> bytes, as the keys are
        self._source = source

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DataError(
                f"{self._source} holds a pickled {module}.{name}, which a CIFAR file never "
                "contains; the file is not an official CIFAR archive (it may be tampered "
                "with): delete it and download it again from https://www.cs.toronto.edu/~kriz/cifar.html"
            ) from None


def load_cifar_pickle(data: bytes, source: str):
    """Unpickles `data` (the bytes of the file named `source`) without running code."""
    try:
        return _CifarUnpickler(io.BytesIO(data), source).load()
    except DataError:
        raise
    except Exception as e:  # a damaged pickle can fail in many ways; all mean the same
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(
            f"{source} is not a readable CIFAR pickle ({reason}); the file is corrupt or "
            "incomplete: delete it and download it again from https://www.cs.toronto.edu/~kriz/cifar.html"
        ) from None
