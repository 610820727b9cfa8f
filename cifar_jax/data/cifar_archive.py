"""CIFAR-10 / CIFAR-100 from the official "python version" archives or their folders.

The archive is read in place (no extraction to disk). Rows are 3072 bytes in CHW order
(1024 red, 1024 green, 1024 blue); they become NHWC here, as the rest of cifar_jax expects.
"""
from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import tarfile
import zlib

import numpy as np

from cifar_jax.data.safe_pickle import load_cifar_pickle
from cifar_jax.data.types import Dataset
from cifar_jax.errors import DataError


@dataclasses.dataclass(frozen=True)
class CifarVariant:
    name: str
    archive: str
    md5: str
    folder: str  # the top-level folder inside the archive
    train_members: tuple[str, ...]
    test_member: str
    meta_member: str
    names_key: bytes
    labels_key: bytes
    size: int  # bytes of the official archive: a download writes no more and refuses another size (md5 checks)

    @property
    def url(self) -> str:
        return f"https://www.cs.toronto.edu/~kriz/{self.archive}"


VARIANTS = {
    "cifar10": CifarVariant(
        "cifar10", "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
        "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
        "batches.meta", b"label_names", b"labels", size=170_498_071),
    "cifar100": CifarVariant(
        "cifar100", "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
        "cifar-100-python", ("train",), "test", "meta", b"fine_label_names", b"fine_labels", size=169_001_437),
}


def find_cifar(variant: CifarVariant, data_dir: pathlib.Path) -> pathlib.Path | None:
    """The archive or extracted folder for `variant` at `data_dir`, or None if absent."""
    candidates = [
        data_dir / variant.archive,  # preferred: only the archive can be checked by md5
        data_dir / variant.folder,
        data_dir,  # data_dir may itself be the archive or the extracted folder
    ]
    for path in candidates:
        if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
            return path
        if path.is_dir() and (path / variant.meta_member).is_file():
            return path
    return None


def read_cifar(variant: CifarVariant, source: pathlib.Path, verify_md5: bool) -> Dataset:
    """Reads `source` (from `find_cifar`) into a Dataset."""
    wanted = [*variant.train_members, variant.test_member, variant.meta_member]
    if source.is_dir():
        files = _read_folder(variant, source, wanted)
    else:
        if verify_md5:
            check_md5(variant, source)
        files = _read_archive(variant, source, wanted)
    names = _unpickle(variant, files, variant.meta_member).get(variant.names_key)
    if not isinstance(names, list) or not names:
        _corrupt(variant, f"{source}: {variant.meta_member} has no {variant.names_key.decode()} list")
    class_names = tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names)
    train = [_read_batch(variant, files, m, len(class_names)) for m in variant.train_members]
    test_images, test_labels = _read_batch(variant, files, variant.test_member, len(class_names))
    return Dataset(
        train_images=np.concatenate([images for images, _ in train]),
        train_labels=np.concatenate([labels for _, labels in train]),
        test_images=test_images,
        test_labels=test_labels,
        class_names=class_names,
    )


def _read_batch(variant, files, member, num_classes):
    batch = _unpickle(variant, files, member)
    data, labels = batch.get(b"data"), batch.get(variant.labels_key)
    where = f"{variant.name} {member}"
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", type(data).__name__)
        _corrupt(variant, f"{where}: b'data' is {shape}, not uint8 rows of 3072 pixels")
    try:
        labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
    except (TypeError, ValueError, OverflowError):  # e.g. bytes, dicts or huge ints
        _corrupt(variant, f"{where}: {variant.labels_key!r} is not a list of integers")
    if labels.shape != (len(data),):
        _corrupt(variant, f"{where}: {labels.size} labels for {len(data)} images")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        _corrupt(variant, f"{where}: labels span {labels.min()}..{labels.max()} "
                          f"but there are {num_classes} classes")
    # Rows are CHW; NHWC is what the model and augmentation code take.
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels.astype(np.int32)


def _unpickle(variant, files, member):
    value = load_cifar_pickle(files[member], f"{variant.name} file {member}")
    if not isinstance(value, dict):
        _corrupt(variant, f"{variant.name} file {member} holds a {type(value).__name__}, not a dict")
    return value


def _read_folder(variant, folder, wanted):
    files = {}
    for member in wanted:
        path = folder / member
        if not path.is_file():
            _corrupt(variant, f"{path} is missing from the extracted folder")
        files[member] = path.read_bytes()
    return files


def _read_archive(variant, archive, wanted):
    names = {f"{variant.folder}/{m}": m for m in wanted}
    files = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for info in tar:
                if info.name in names and info.isfile():
                    files[names[info.name]] = tar.extractfile(info).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        _corrupt(variant, f"{archive} is truncated or corrupt ({type(e).__name__}: {' '.join(str(e).split())})")
    missing = [f"{variant.folder}/{m}" for m in wanted if m not in files]
    if missing:
        _corrupt(variant, f"{archive} lacks {', '.join(missing)}")
    return files


def md5_of(path: pathlib.Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_md5(variant: CifarVariant, archive: pathlib.Path) -> None:
    """DataError unless `archive` has the official md5 of `variant`."""
    actual = md5_of(archive)
    if actual != variant.md5:
        raise DataError(
            f"{archive} has md5 {actual}, expected {variant.md5}: the file is corrupt "
            f"or incomplete; download it again from {variant.url}, or set "
            "--config.verify_md5=False if you modified the archive on purpose"
        )


def _corrupt(variant, problem):
    raise DataError(
        f"{problem}; the {variant.name} data is not the official archive or is incomplete: "
        f"download {variant.archive} again from {variant.url}"
    )
