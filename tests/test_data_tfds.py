"""TFDS through tfds.data_source, faked with tfds.testing.mock_data; never the network."""
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.testing import mocking

from cifar_jax.data import load_dataset
from cifar_jax.errors import DataError
from tests import cifar_files

# USE_CODE takes features from the builder's code, where cifar10's labels have no names yet
# (TFDS reads them from the archive while preparing), so class names come out as "0".."9".
# USE_FILES with a metadata folder written by TFDS itself gives the names a prepared
# dataset has. AUTO would look for metadata the pip package does not ship.
POLICY = tfds.testing.MockPolicy.USE_CODE


def _prepared_metadata(root, name, class_names, splits=(("train", 50), ("test", 10))):
    """The dataset_info.json / features.json / label names TFDS writes when preparing `name`."""
    builder = tfds.builder(name, data_dir=str(root), file_format="array_record")
    builder.info.features["label"].names = class_names
    builder.info.set_splits(tfds.core.SplitDict([
        tfds.core.SplitInfo(name=split, shard_lengths=[n], num_bytes=0, filename_template=None)
        for split, n in splits]))
    pathlib.Path(builder.data_dir).mkdir(parents=True)
    builder.info.write_to_directory(builder.data_dir)
    return root


def _mock_prepared(tmp_path, name, class_names, num_examples):
    metadata = _prepared_metadata(tmp_path / "tfds_metadata", name, class_names)
    return tfds.testing.mock_data(num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_FILES,
                                  data_dir=str(metadata))


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    cifar_files.block_network(monkeypatch)
    # Builders of unprepared datasets leave an empty mkdtemp("tfds") folder behind (4.9.10).
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path_factory.mktemp("tfds_tempdir")))


def _config(tmp_path, **overrides):
    return cifar_files.make_config(**{"data_dir": str(tmp_path), **overrides})


def test_cifar10_from_mock_data(tmp_path):
    with _mock_prepared(tmp_path, "cifar10", cifar_files.CIFAR10_NAMES, num_examples=12):
        data = load_dataset(_config(tmp_path, dataset="tfds:cifar10", num_classes=10))
        expected = tfds.data_source("cifar10", split="test")[5]
    assert data.train_images.shape == (12, 32, 32, 3) and data.train_images.dtype == np.uint8
    assert data.test_labels.dtype == np.int32 and data.test_labels.shape == (12,)
    assert data.class_names == tuple(cifar_files.CIFAR10_NAMES)  # from the label feature
    np.testing.assert_array_equal(data.test_images[5], expected["image"])
    assert data.test_labels[5] == expected["label"]


def test_batched_reads_give_the_same_arrays(tmp_path, monkeypatch):
    with tfds.testing.mock_data(num_examples=5, policy=POLICY):
        item_by_item = load_dataset(_config(tmp_path, dataset="tfds:cifar10", num_classes=10))
    # mock_data's own __getitems__ is called without `self` (tfds 4.9.10), which sends the
    # reader to item reads; a fixed one shows the batched path reads the same examples.
    calls = []

    def getitems(keys, generator, serialized=False):
        calls.append(len(keys))
        return [generator[k] for k in keys]

    monkeypatch.setattr(mocking, "_getitems", getitems)
    with tfds.testing.mock_data(num_examples=5, policy=POLICY):
        batched = load_dataset(_config(tmp_path, dataset="tfds:cifar10", num_classes=10))
    assert calls == [5, 5]
    np.testing.assert_array_equal(batched.train_images, item_by_item.train_images)
    np.testing.assert_array_equal(batched.test_labels, item_by_item.test_labels)


def test_grayscale_28x28_becomes_32x32_rgb(tmp_path):
    with tfds.testing.mock_data(num_examples=4, policy=POLICY):
        data = load_dataset(_config(tmp_path, dataset="tfds:mnist", num_classes=10))
        first = tfds.data_source("mnist", split="train")[0]["image"]
    assert first.shape == (28, 28, 1)
    assert data.train_images.shape == (4, 32, 32, 3)
    assert (data.train_images[0, ..., 0] == data.train_images[0, ..., 2]).all()
    assert data.class_names == tuple(str(i) for i in range(10))  # USE_CODE: no names


def test_features_without_image_and_label_are_refused(tmp_path):
    with tfds.testing.mock_data(num_examples=2, policy=POLICY):
        with pytest.raises(DataError) as error:
            load_dataset(_config(tmp_path, dataset="tfds:imdb_reviews", num_classes=2))
    cifar_files.assert_one_line(error, "imdb_reviews", "not 'image' and 'label'", "image classification")


def test_num_classes_mismatch(tmp_path):
    with tfds.testing.mock_data(num_examples=3, policy=POLICY):
        with pytest.raises(DataError) as error:
            load_dataset(_config(tmp_path, dataset="tfds:cifar100", num_classes=10))
    cifar_files.assert_one_line(error, "config num_classes=10 but the tfds:cifar100 data has 100 classes",
                                "--config.num_classes=100")


def test_tfds_failure_is_one_line(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Failed to establish a new connection\nsecond line")

    monkeypatch.setattr(tfds, "data_source", offline)
    with pytest.raises(DataError) as error:
        load_dataset(_config(tmp_path, dataset="tfds:oxford_flowers102", num_classes=102))
    cifar_files.assert_one_line(error, "oxford_flowers102", str(tmp_path), "ConnectionError",
                                "Failed to establish a new connection second line", "check the network")


def test_unknown_tfds_name(tmp_path):
    with pytest.raises(DataError) as error:
        load_dataset(_config(tmp_path, dataset="tfds:no_such_dataset_xyz", num_classes=10, download=False))
    cifar_files.assert_one_line(error, "no dataset named 'no_such_dataset_xyz'", "tfds.list_builders()")


def test_not_prepared_without_download(tmp_path):
    with pytest.raises(DataError) as error:
        load_dataset(_config(tmp_path, dataset="tfds:cifar10", num_classes=10, download=False))
    cifar_files.assert_one_line(error, "cifar10 is not prepared", str(tmp_path), "--config.download=True")
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("download", [True, False])
def test_cifar_without_an_archive_never_asks_tfds(tmp_path, monkeypatch, download):
    # TFDS cannot prepare CIFAR without TensorFlow, so it is only the explicit tfds:NAME dataset.
    def must_not_run(*args, **kwargs):
        raise AssertionError("TFDS was asked for cifar10")

    monkeypatch.setattr(tfds, "data_source", must_not_run)
    monkeypatch.setattr(tfds, "builder", must_not_run)
    with pytest.raises(DataError) as error:  # offline: cifar_jax's own download fails at once
        load_dataset(_config(tmp_path / "empty", dataset="cifar10", num_classes=10, download=download))
    cifar_files.assert_one_line(error, str(tmp_path / "empty" / "cifar-10-python.tar.gz"),
                                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz")


def test_empty_data_dir_means_the_tfds_default(tmp_path, monkeypatch):
    asked = []

    def offline(name, split, data_dir, download):
        asked.append(data_dir)
        raise ConnectionError("offline")

    monkeypatch.setattr(tfds, "data_source", offline)
    with pytest.raises(DataError) as error:
        load_dataset(_config(tmp_path, dataset="tfds:cifar10", num_classes=10, data_dir=""))
    assert asked == [None]
    cifar_files.assert_one_line(error, "TFDS's default data_dir", "pip install tensorflow-cpu")


def test_missing_tfds_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import now raises ImportError
    with pytest.raises(DataError) as error:
        load_dataset(_config(tmp_path, dataset="tfds:cifar10", num_classes=10))
    cifar_files.assert_one_line(error, 'pip install "cifar-jax[tfds]"')


def test_importing_cifar_jax_does_not_import_tfds():
    code = ("import sys, cifar_jax.data, cifar_jax.data.cifar_archive, cifar_jax.data.image_folder, "
            "cifar_jax.data.synthetic, cifar_jax.data.tfds_source; "
            "assert 'tensorflow_datasets' not in sys.modules, 'tfds imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=cifar_files.ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
