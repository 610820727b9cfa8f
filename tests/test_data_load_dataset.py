"""load_dataset: dispatch on config.dataset and the checks against the config."""
import numpy as np
import pytest

from cifar_jax.data import Dataset, load_dataset
from cifar_jax.data.dataset import check_dataset
from cifar_jax.errors import ConfigError, DataError
from tests import cifar_files


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    cifar_files.block_network(monkeypatch)


@pytest.mark.parametrize("name", ["cifar1000", "CIFAR100", "tfds:", "imagenet"])
def test_unknown_dataset_lists_the_valid_names(name):
    with pytest.raises(ConfigError) as error:
        load_dataset(cifar_files.make_config(dataset=name))
    cifar_files.assert_one_line(error, repr(name), "--config.dataset=", "cifar100", "cifar10", "image_folder",
                                "synthetic", "tfds:NAME")


def test_num_classes_must_match_the_cifar_data(tmp_path):
    rng = np.random.default_rng(0)
    splits = cifar_files.random_cifar_split(rng, 10, 10), cifar_files.random_cifar_split(rng, 10, 10)
    cifar_files.write_cifar_archive(tmp_path, "cifar10", *splits)
    config = cifar_files.make_config(dataset="cifar10", data_dir=str(tmp_path), verify_md5=False)
    assert config.num_classes == 100  # the default is CIFAR-100's
    with pytest.raises(DataError) as error:
        load_dataset(config)
    message = cifar_files.assert_one_line(error)
    assert message == "config num_classes=100 but the cifar10 data has 10 classes; pass --config.num_classes=10"


def test_missing_cifar_data_names_the_path_and_the_file(tmp_path):
    config = cifar_files.make_config(dataset="cifar100", data_dir=str(tmp_path / "data"), download=False)
    with pytest.raises(DataError) as error:
        load_dataset(config)
    cifar_files.assert_one_line(error, str(tmp_path / "data" / "cifar-100-python.tar.gz"),
                                "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "cifar-100-python/")


def test_offline_cifar_with_the_default_data_dir_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_JAX_DATA", str(tmp_path / "cache"))  # what data_dir "" means here
    monkeypatch.delenv("CIFAR_JAX_DATA_URL", raising=False)
    config = cifar_files.make_config(dataset="cifar100")
    assert config.data_dir == "" and config.download
    with pytest.raises(DataError) as error:
        load_dataset(config)
    cifar_files.assert_one_line(error, "cannot connect to https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                                str(tmp_path / "cache" / "cifar-100-python.tar.gz"), "--config.data_url=URL")
    assert not (tmp_path / "cache" / "cifar-100-python.tar.gz").exists()


def test_image_folder_needs_a_data_dir():
    with pytest.raises(ConfigError) as error:
        load_dataset(cifar_files.make_config(dataset="image_folder", num_classes=3))
    cifar_files.assert_one_line(error, "image_folder needs --config.data_dir=PATH")


def _dataset(train_labels, images=None, names=("a", "b")):
    images = np.zeros((len(train_labels), 32, 32, 3), np.uint8) if images is None else images
    return Dataset(images, np.asarray(train_labels, np.int32), images[:1], np.zeros(1, np.int32), names)


def test_check_dataset_accepts_a_consistent_dataset():
    check_dataset(_dataset([0, 1, 1]), "x", 2)


@pytest.mark.parametrize("dataset, problem", [
    (_dataset([0, 2]), "labels span 0..2, outside 0..1"),
    (_dataset([0, -1]), "labels span -1..0"),
    (_dataset([0, 1], images=np.zeros((2, 32, 32, 3), np.float32)), "not non-empty uint8 (N, H, W, 3)"),
    (_dataset([0, 1], images=np.zeros((2, 32, 32), np.uint8)), "not non-empty uint8 (N, H, W, 3)"),
    (Dataset(np.zeros((2, 8, 8, 3), np.uint8), np.zeros(3, np.int32), np.zeros((1, 8, 8, 3), np.uint8),
             np.zeros(1, np.int32), ("a", "b")), "labels are int32 (3,) for 2 images"),
])
def test_check_dataset_refuses_inconsistent_data(dataset, problem):
    with pytest.raises(DataError) as error:
        check_dataset(dataset, "x", 2)
    cifar_files.assert_one_line(error, problem)
