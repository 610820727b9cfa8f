"""Small data in the real on-disk formats, written by the tests themselves.

CIFAR files follow the official "python version": pickles (protocol 2) of dicts with bytes
keys, rows of 3072 uint8 in CHW order, inside cifar-10-python.tar.gz /
cifar-100-python.tar.gz with the official member names. Image folders are
train/<class>/<image> and test/<class>/<image> trees of PNG or JPEG files.
"""
from __future__ import annotations

import io
import os
import pathlib
import pickle
import runpy
import socket
import tarfile
import zipfile

import numpy as np
from PIL import Image

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_NAMES = [f"fine_{i:02d}" for i in range(100)]


def random_cifar_split(rng, n, num_classes):
    """(images NHWC uint8, labels int list): every class present when n >= num_classes."""
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    labels = [int(i % num_classes) for i in rng.permutation(n)]
    return images, labels


def to_cifar_rows(images):
    """NHWC -> the official (N, 3072) layout: all red, then all green, then all blue."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), 3072))


def cifar_batch(images, labels, labels_key, batch_label=b"batch"):
    batch = {
        b"batch_label": batch_label,
        labels_key: labels,
        b"data": to_cifar_rows(images),
        b"filenames": [f"img_{i}.png".encode() for i in range(len(images))],
    }
    if labels_key == b"fine_labels":
        batch[b"coarse_labels"] = [label // 5 for label in labels]
    return batch


def cifar_members(variant, train, test):
    """{member name: pickled bytes} of the official archive for `variant` (cifar10|cifar100)."""
    dump = lambda obj: pickle.dumps(obj, protocol=2)  # noqa: E731 - what the official files use
    if variant == "cifar10":
        per = -(-len(train[0]) // 5)
        members = {
            f"cifar-10-batches-py/data_batch_{i + 1}": dump(cifar_batch(
                train[0][i * per:(i + 1) * per], train[1][i * per:(i + 1) * per], b"labels"))
            for i in range(5)
        }
        members["cifar-10-batches-py/test_batch"] = dump(cifar_batch(*test, b"labels"))
        members["cifar-10-batches-py/batches.meta"] = dump(
            {b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_cases_per_batch": per, b"num_vis": 3072})
        return members
    return {
        "cifar-100-python/train": dump(cifar_batch(*train, b"fine_labels")),
        "cifar-100-python/test": dump(cifar_batch(*test, b"fine_labels")),
        "cifar-100-python/meta": dump({b"fine_label_names": [n.encode() for n in CIFAR100_NAMES],
                                       b"coarse_label_names": [f"coarse_{i}".encode() for i in range(20)]}),
    }


def write_tar(path, members, mode="w:gz"):
    """A tar archive of {member name: bytes} (plus the folder entries real archives have)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tar:
        for folder in sorted({name.rsplit("/", 1)[0] for name in members if "/" in name}):
            info = tarfile.TarInfo(folder)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return pathlib.Path(path)


def write_cifar_archive(data_dir, variant, train, test):
    name = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}[variant]
    return write_tar(pathlib.Path(data_dir) / name, cifar_members(variant, train, test))


def extract_members(folder, members):
    for name, data in members.items():
        path = pathlib.Path(folder) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def encode_image(array, fmt="PNG"):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def image_folder_members(rng, classes=("cat", "dog", "frog"), per_class=(3, 2), prefix=""):
    """({member name: PNG bytes}, {split: (images, labels)} in the loader's sorted order)."""
    members, expected = {}, {}
    for split, count in zip(("train", "test"), per_class):
        images, labels = [], []
        for label, name in enumerate(sorted(classes)):
            for i in range(count):
                image = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
                members[f"{prefix}{split}/{name}/{i:04d}.png"] = encode_image(image)
                images.append(image)
                labels.append(label)
        expected[split] = (np.stack(images), np.asarray(labels, dtype=np.int32))
    return members, expected


def touch_later(path):
    """Moves `path`'s mtime forward, so a change is seen even on coarse-mtime filesystems."""
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


ROOT = pathlib.Path(__file__).resolve().parents[1]


def make_config(**overrides):
    """configs/default.py's config (loaded by path, as the command line does) with overrides."""
    config = runpy.run_path(str(ROOT / "configs" / "default.py"))["get_config"]()
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def assert_one_line(error, *fragments):
    """The message is one line (the CLI prints it alone) and mentions every fragment."""
    message = str(error.value if hasattr(error, "value") else error)
    assert "\n" not in message, message
    for fragment in fragments:
        assert str(fragment) in message, f"{fragment!r} not in: {message}"
    return message


def block_network(monkeypatch):
    """Any attempt to open a connection fails at once, as on an offline machine."""
    def refuse(*args, **kwargs):
        raise OSError("network access is blocked in the data tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
