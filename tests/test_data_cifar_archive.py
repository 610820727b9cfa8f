"""CIFAR-10/100 from official-format archives and extracted folders written here."""
import dataclasses
import hashlib
import pickle

import numpy as np
import pytest

from cifar_jax.data import load_dataset
from cifar_jax.data.cifar_archive import VARIANTS, find_cifar, read_cifar
from cifar_jax.errors import DataError
from tests import cifar_files


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    cifar_files.block_network(monkeypatch)


def _splits(num_classes, n_train=20, n_test=10, seed=0):
    rng = np.random.default_rng(seed)
    return (cifar_files.random_cifar_split(rng, n_train, num_classes),
            cifar_files.random_cifar_split(rng, n_test, num_classes))


def _load(variant, data_dir, verify_md5=False):
    source = find_cifar(VARIANTS[variant], data_dir)
    assert source is not None
    return read_cifar(VARIANTS[variant], source, verify_md5)


def test_rows_are_chw_and_become_hwc(tmp_path):
    # Rows written by hand, independent of the helper's transpose: value = f(channel, y, x).
    n = 2
    rows = np.zeros((n, 3072), np.uint8)
    for i in range(n):
        for c in range(3):
            for y in range(32):
                rows[i, c * 1024 + y * 32: c * 1024 + y * 32 + 32] = (np.arange(32) + 7 * y + 50 * c + i) % 256
    batch = {b"batch_label": b"t", b"fine_labels": [3, 1], b"coarse_labels": [0, 0],
             b"data": rows, b"filenames": [b"a.png", b"b.png"]}
    members = {"cifar-100-python/train": pickle.dumps(batch, protocol=2),
               "cifar-100-python/test": pickle.dumps(batch, protocol=2),
               "cifar-100-python/meta": pickle.dumps(
                   {b"fine_label_names": [n.encode() for n in cifar_files.CIFAR100_NAMES]}, protocol=2)}
    cifar_files.write_tar(tmp_path / "cifar-100-python.tar.gz", members)
    data = _load("cifar100", tmp_path)
    assert data.train_images.shape == (2, 32, 32, 3) and data.train_images.flags.c_contiguous
    for i, y, x, c in [(0, 0, 0, 0), (0, 0, 1, 0), (0, 1, 0, 0), (1, 5, 9, 2), (1, 31, 31, 1)]:
        assert data.train_images[i, y, x, c] == (x + 7 * y + 50 * c + i) % 256
    assert data.train_labels.tolist() == [3, 1] and data.train_labels.dtype == np.int32


@pytest.mark.parametrize("variant, names", [("cifar100", cifar_files.CIFAR100_NAMES),
                                            ("cifar10", cifar_files.CIFAR10_NAMES)])
def test_archive_round_trip(tmp_path, variant, names):
    num_classes = len(names)
    (train_x, train_y), (test_x, test_y) = _splits(num_classes, n_train=2 * num_classes, n_test=num_classes)
    cifar_files.write_cifar_archive(tmp_path, variant, (train_x, train_y), (test_x, test_y))
    data = _load(variant, tmp_path)
    np.testing.assert_array_equal(data.train_images, train_x)  # cifar10: batches 1..5 in order
    np.testing.assert_array_equal(data.train_labels, train_y)
    np.testing.assert_array_equal(data.test_images, test_x)
    np.testing.assert_array_equal(data.test_labels, test_y)
    assert data.class_names == tuple(names)


@pytest.mark.parametrize("variant", ["cifar100", "cifar10"])
def test_extracted_folder_matches_archive(tmp_path, variant):
    num_classes = 100 if variant == "cifar100" else 10
    train, test = _splits(num_classes)
    members = cifar_files.cifar_members(variant, train, test)
    cifar_files.write_cifar_archive(tmp_path / "archive", variant, train, test)
    cifar_files.extract_members(tmp_path / "extracted", members)
    from_archive = _load(variant, tmp_path / "archive")
    folder = VARIANTS[variant].folder
    for data_dir in (tmp_path / "extracted", tmp_path / "extracted" / folder):  # parent or the folder
        from_folder = _load(variant, data_dir)
        for field in dataclasses.fields(from_archive):
            np.testing.assert_array_equal(getattr(from_folder, field.name), getattr(from_archive, field.name))


def test_md5_mismatch_names_both_sums_and_the_fixes(tmp_path):
    archive = cifar_files.write_cifar_archive(tmp_path, "cifar100", *_splits(100))
    actual = hashlib.md5(archive.read_bytes()).hexdigest()
    with pytest.raises(DataError) as error:
        _load("cifar100", tmp_path, verify_md5=True)
    cifar_files.assert_one_line(error, actual, "eb9058c3a382ffc7106e4002c42a8d85", "corrupt or incomplete",
                                "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                                "--config.verify_md5=False")


def test_matching_md5_passes(tmp_path, monkeypatch):
    archive = cifar_files.write_cifar_archive(tmp_path, "cifar10", *_splits(10))
    actual = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(VARIANTS, "cifar10", dataclasses.replace(VARIANTS["cifar10"], md5=actual))
    assert len(_load("cifar10", tmp_path, verify_md5=True).train_images) == 20


def test_truncated_archive(tmp_path):
    archive = cifar_files.write_cifar_archive(tmp_path, "cifar100", *_splits(100, n_train=200))
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size * 2 // 3])
    with pytest.raises(DataError) as error:
        _load("cifar100", tmp_path)
    cifar_files.assert_one_line(error, str(archive), "truncated or corrupt",
                                "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz")


def test_missing_member(tmp_path):
    members = cifar_files.cifar_members("cifar10", *_splits(10))
    del members["cifar-10-batches-py/data_batch_3"]
    cifar_files.write_tar(tmp_path / "cifar-10-python.tar.gz", members)
    with pytest.raises(DataError) as error:
        _load("cifar10", tmp_path)
    cifar_files.assert_one_line(error, "lacks cifar-10-batches-py/data_batch_3",
                                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz")


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def test_malicious_pickle_in_archive_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "created_by_unpickling"
    members = cifar_files.cifar_members("cifar100", *_splits(100))
    members["cifar-100-python/meta"] = pickle.dumps({b"fine_label_names": [_Evil(marker)]}, protocol=2)
    cifar_files.write_tar(tmp_path / "cifar-100-python.tar.gz", members)
    with pytest.raises(DataError) as error:
        _load("cifar100", tmp_path)
    cifar_files.assert_one_line(error, "cifar100 file meta", "never contains", "not an official CIFAR archive")
    assert not marker.exists()


@pytest.mark.parametrize("damage, problem", [
    (lambda b: {**b, b"data": b[b"data"][:, :3071]}, "not uint8 rows of 3072"),
    (lambda b: {**b, b"data": b[b"data"].astype(np.int16)}, "not uint8 rows of 3072"),
    (lambda b: {**b, b"fine_labels": b[b"fine_labels"][:-1]}, "labels for"),
    (lambda b: {**b, b"fine_labels": [100] + b[b"fine_labels"][1:]}, "there are 100 classes"),
])
def test_bad_shapes_and_labels(tmp_path, damage, problem):
    train, test = _splits(100)
    members = cifar_files.cifar_members("cifar100", train, test)
    batch = pickle.loads(members["cifar-100-python/train"], encoding="bytes")
    members["cifar-100-python/train"] = pickle.dumps(damage(batch), protocol=2)
    cifar_files.write_tar(tmp_path / "cifar-100-python.tar.gz", members)
    with pytest.raises(DataError) as error:
        _load("cifar100", tmp_path)
    cifar_files.assert_one_line(error, "cifar100 train", problem, "download cifar-100-python.tar.gz again")


def test_load_dataset_reads_the_archive_in_data_dir(tmp_path):
    train, test = _splits(10)
    cifar_files.write_cifar_archive(tmp_path, "cifar10", train, test)
    config = cifar_files.make_config(dataset="cifar10", num_classes=10, data_dir=str(tmp_path), verify_md5=False)
    data = load_dataset(config)
    np.testing.assert_array_equal(data.test_images, test[0])
    assert data.num_classes == 10
