"""The restricted unpickler admits CIFAR pickles and refuses anything that could run code."""
import builtins
import os
import pickle
import subprocess

import numpy as np
import pytest

from cifar_jax.data.safe_pickle import load_cifar_pickle
from cifar_jax.errors import DataError
from tests import cifar_files


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    cifar_files.block_network(monkeypatch)


def _official_like_batch():
    rng = np.random.default_rng(0)
    images, labels = cifar_files.random_cifar_split(rng, 6, 3)
    return cifar_files.cifar_batch(images, labels, b"fine_labels")


def test_loads_a_protocol_2_batch_as_written_by_numpy_2():
    batch = _official_like_batch()
    data = pickle.dumps(batch, protocol=2)
    assert b"numpy._core.multiarray" in data  # what numpy 2 writes
    loaded = load_cifar_pickle(data, "train")
    assert loaded.keys() == batch.keys()
    np.testing.assert_array_equal(loaded[b"data"], batch[b"data"])
    assert loaded[b"data"].dtype == np.uint8
    assert loaded[b"fine_labels"] == batch[b"fine_labels"]
    assert loaded[b"filenames"] == batch[b"filenames"] and loaded[b"batch_label"] == b"batch"


def test_loads_the_numpy_1_module_name_the_official_files_use():
    batch = _official_like_batch()
    data = pickle.dumps(batch, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy._core" not in data
    np.testing.assert_array_equal(load_cifar_pickle(data, "train")[b"data"], batch[b"data"])


def test_python_2_strings_load_as_bytes():
    # {'data': 'abc', 'labels': [1, 2]} as Python 2's cPickle writes it (SHORT_BINSTRING).
    data = b"\x80\x02}q\x00(U\x04dataq\x01U\x03abcq\x02U\x06labelsq\x03]q\x04(K\x01K\x02eu."
    assert load_cifar_pickle(data, "meta") == {b"data": b"abc", b"labels": [1, 2]}


class _CreatesFile:
    """Unpickling this with plain pickle would create `path`."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return builtins.open, (str(self.path), "w")


class _RunsShell:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


class _Subprocess:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return subprocess.call, (["touch", str(self.path)],)


# Protocol 2 writes Python 2 module names (builtins -> __builtin__), so match the tail.
@pytest.mark.parametrize("payload, global_name", [
    (_CreatesFile, ".open,"),
    (_RunsShell, ".system,"),
    (_Subprocess, ".call,"),
])
def test_refuses_code_and_never_runs_it(tmp_path, payload, global_name):
    marker = tmp_path / "pwned"
    batch = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [payload(marker)]}
    data = pickle.dumps(batch, protocol=2)
    with pytest.raises(DataError) as error:
        load_cifar_pickle(data, "cifar10 file data_batch_1")
    cifar_files.assert_one_line(error, "cifar10 file data_batch_1", global_name,
                                "never contains", "not an official CIFAR archive", "download it again")
    assert not marker.exists()


def test_refuses_numpy_globals_beyond_plain_arrays():
    with pytest.raises(DataError) as error:
        load_cifar_pickle(pickle.dumps(np.ma.masked_array([1, 2]), protocol=2), "meta")
    cifar_files.assert_one_line(error, "holds a pickled numpy.ma.core", "never contains")


def test_codecs_encode_is_admitted_for_latin1_only():
    good = pickle.dumps(b"\xff\x00bytes", protocol=2)
    assert b"_codecs" in good  # how Python 3 writes bytes under protocol 2
    assert load_cifar_pickle(good, "meta") == b"\xff\x00bytes"
    bad = good.replace(b"latin1", b"rot13_")  # same length keeps the pickle well formed
    with pytest.raises(DataError) as error:
        load_cifar_pickle(bad, "meta")
    cifar_files.assert_one_line(error, "meta", "not a readable CIFAR pickle", "download it again")


def test_truncated_pickle_is_a_one_line_data_error():
    data = pickle.dumps(_official_like_batch(), protocol=2)
    with pytest.raises(DataError) as error:
        load_cifar_pickle(data[: len(data) // 2], "cifar-100-python/train")
    cifar_files.assert_one_line(error, "cifar-100-python/train", "corrupt or incomplete", "download it again")


def test_the_payloads_are_live_under_plain_pickle(tmp_path):
    # The control for the refusal test: the same bytes do create the file when unrestricted.
    for payload in (_CreatesFile, _RunsShell, _Subprocess):
        marker = tmp_path / f"made_by_{payload.__name__}"
        pickle.loads(pickle.dumps({b"labels": [payload(marker)]}, protocol=2), encoding="bytes")
        assert marker.exists()
