"""`dataset="image_folder"`: train/<class>/<image> and test/<class>/<image> images.

The source is a folder or a .tar, .tar.gz/.tgz or .zip archive of that layout (one extra
top-level folder, as archiving a folder adds, is allowed). Classes are the class folders
sorted by name. Images are decoded once with Pillow (see pixels.py: RGB, 32x32 BILINEAR)
and the arrays cached as .npz, keyed by the source's path, sizes and mtimes, so editing,
adding or removing an image (or replacing the archive) decodes again.

Sizes are bounded before anything is read: an image file larger than MAX_IMAGE_BYTES is
refused, naming it, and so is an archive whose images add up to more than
archive_budget_bytes() (an archive's images are held in memory together while they are
decoded; a folder's are read one at a time). Link members of an archive are skipped.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import multiprocessing
import os
import pathlib
import re
import stat
import tarfile
import tempfile
import warnings
import zipfile
import zlib
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
from PIL import Image

from cifar_jax.data.pixels import to_rgb32
from cifar_jax.data.types import Dataset
from cifar_jax.errors import DataError

SPLITS = ("train", "test")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")
LAYOUT = "train/<class>/<image> and test/<class>/<image>"
_CACHE_VERSION = 1  # bump when decoding changes, so old caches are not reused
_PARALLEL_MIN_IMAGES = 4096  # below this, starting worker processes costs more than it saves
_MIN_WORKERS = 4
_CHUNK = 2048
# No image file Pillow decodes without its decompression-bomb warning needs more than this:
# 4 bytes (uncompressed RGBA) for each of its MAX_IMAGE_PIXELS pixels, about 358 MB.
MAX_IMAGE_BYTES = Image.MAX_IMAGE_PIXELS * 4
MEMORY_SHARE = 0.5  # the part of the machine's memory an archive's images may take together


def archive_budget_bytes() -> int:
    """How many bytes of images an archive may hold: MEMORY_SHARE of the machine's memory."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system that says
        physical = 16 << 30
    return int(physical * MEMORY_SHARE)


def load_image_folder(path: str, cache_dir: str = "") -> Dataset:
    """Reads the image folder or archive at `path`, through the decoded-array cache."""
    source = pathlib.Path(path).expanduser().absolute()
    if not source.exists():
        raise DataError(f"image_folder data_dir {source} does not exist; point --config.data_dir at a "
                        f"folder or .tar/.tar.gz/.zip archive laid out as {LAYOUT}")
    if source.is_file() and not source.name.lower().endswith(ARCHIVE_SUFFIXES):
        raise DataError(f"image_folder data_dir {source} is not a folder or a .tar, .tar.gz, .tgz "
                        "or .zip archive; extract it, or repack it as one of those")
    if source.is_dir():
        files = _list_folder(source)
        stamp = [(p, stat.st_size, stat.st_mtime_ns) for p, stat in
                 ((p, f.stat()) for p, f in sorted(files.items()))]
    else:
        files, stat = None, source.stat()
        stamp = [(stat.st_size, stat.st_mtime_ns)]
    cache_file = _cache_file(source, stamp, cache_dir)
    dataset = _read_cache(cache_file)
    if dataset is None:
        if files is None:
            files = _read_zip(source) if source.name.lower().endswith(".zip") else _read_tar(source)
        dataset = _decode(source, _select(source, files))
        _write_cache(cache_file, dataset)
    return dataset


def decode_image(data: bytes, name: str) -> np.ndarray:
    """One encoded image -> (32, 32, 3) uint8; DataError naming `name` if it cannot be read."""
    buffer = io.BytesIO(data)
    try:
        with Image.open(buffer) as image:
            return to_rgb32(image)
    except Image.UnidentifiedImageError:
        problem = "not an image format Pillow reads"
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError... for bad files
        reason = " ".join(str(e).split()).replace(repr(buffer), "the file")
        problem = f"{type(e).__name__}: {reason}"
    raise DataError(f"cannot read image {name} ({problem}); delete or replace that file")


def _parts(name: str) -> tuple[str, ...] | None:
    """Path parts of a candidate image (depth 3 or 4), or None for hidden and other files."""
    parts = tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))
    if len(parts) not in (3, 4) or any(p.startswith((".", "__MACOSX")) for p in parts):
        return None  # .DS_Store, ._* resource forks, README files next to train/ ...
    return parts


def folder_layout(root) -> dict:
    """{split: {class: [(name, path)]}} of the image folder `root`, from file names alone
    (nothing is decoded, no cache written); DataError when it has no class folders."""
    return _select(root, _list_folder(root))


def archive_layout(archive) -> dict:
    """{split: {class: [(name, size in bytes)]}} of an image folder archive from its member
    list alone: a tar's headers (a .tar.gz is decompressed in passing, its members skipped),
    a zip's directory. No image is read or decoded and no cache written; DataError (one
    line) for an unreadable archive or one without class folders."""
    archive = pathlib.Path(archive)
    if archive.name.lower().endswith(".zip"):
        try:
            with zipfile.ZipFile(archive) as zf:
                sizes = {parts: info.file_size for info in zf.infolist()
                         if not info.is_dir() and (parts := _parts(info.filename))}
        except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
            raise DataError(f"{archive} is not a readable zip archive ({e}); it is truncated or "
                            "corrupt: create or download it again") from None
    else:
        try:
            raw = _open_maybe_gzip(archive)  # buffered: skipping members is ~2x faster than r:gz
            with raw, tarfile.open(fileobj=raw, mode="r:") as tar:
                sizes = {parts: info.size for info in tar if info.isreg() and (parts := _parts(info.name))}
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            raise DataError(f"{archive} is not a readable tar archive ({type(e).__name__}: "
                            f"{' '.join(str(e).split())}); it is truncated or corrupt: create or download it "
                            "again") from None
    return _select(archive, sizes)


def _list_folder(root):
    files = {}
    for pattern in ("*/*/*", "*/*/*/*"):
        for path in root.glob(pattern):
            parts = _parts(path.relative_to(root).as_posix())
            if parts and path.is_file():
                files[parts] = path
    return files


def _read_tar(archive):
    files, budget = {}, _Budget(archive)
    try:
        # A big buffer over the gzip stream and plain reads at each member's offset (tarfile
        # seeks back to the next header itself) read many small files ~2x faster than
        # tarfile.open(path) with extractfile.
        raw = _open_maybe_gzip(archive)
        with raw, tarfile.open(fileobj=raw, mode="r:") as tar:
            for info in tar:
                parts = _parts(info.name)
                if parts and info.isreg():
                    budget.take(info.name, info.size)
                if parts and info.isreg() and info.issparse():
                    files[parts] = tar.extractfile(info).read()
                elif parts and info.isreg():
                    raw.seek(info.offset_data)
                    files[parts] = raw.read(info.size)
                    if len(files[parts]) != info.size:
                        raise EOFError(f"{info.name} is cut short")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"{archive} is not a readable tar archive ({type(e).__name__}: {' '.join(str(e).split())}); "
                        "it is truncated or corrupt: create or download it again") from None
    return files


def _open_maybe_gzip(archive):
    with open(archive, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    opened = gzip.open(archive) if gzipped else open(archive, "rb")
    return io.BufferedReader(opened, 1 << 20)


def _read_zip(archive):
    files, budget = {}, _Budget(archive)
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                parts = _parts(info.filename)
                if parts and not info.is_dir() and not _is_zip_link(info):  # links are skipped, as in a tar
                    budget.take(info.filename, info.file_size)
                    files[parts] = zf.read(info)  # zipfile stops at file_size and checks the CRC
        return files
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
        raise DataError(f"{archive} is not a readable zip archive ({e}); it is truncated or "
                        "corrupt: create or download it again") from None


def _is_zip_link(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)  # Unix mode bits, where the archiver stored them


class _Budget:
    """The bounds on one archive's image members, checked from their headers before reading."""

    def __init__(self, archive):
        self.archive, self.total, self.limit = archive, 0, archive_budget_bytes()

    def take(self, name: str, size: int) -> None:
        _check_image_size(f"{self.archive}:{name}", size)
        self.total += size
        if self.total > self.limit:
            raise DataError(f"{self.archive}: its images add up to more than {self.limit / 1e9:.1f} GB (at "
                            f"{name}), more than {MEMORY_SHARE:.0%} of this machine's memory, and an archive's "
                            "images are read into memory together; extract it and point --config.data_dir at "
                            "the folder (read one image at a time)")


def _check_image_size(name: str, size: int) -> None:
    if size > MAX_IMAGE_BYTES:
        raise DataError(f"{name} is {size / 1e6:,.0f} MB, more than any image needs ({MAX_IMAGE_BYTES / 1e6:.0f} MB: "
                        f"4 bytes for each of Pillow's {Image.MAX_IMAGE_PIXELS:,} pixels); remove or shrink that file")


def _select(source, files):
    """{split: {class: [(display name, bytes or path)]}} for the layout found in `files`."""
    for depth in (0, 1):
        hits = [p for p in files if len(p) == depth + 3 and p[depth] in SPLITS]
        if hits and (depth == 0 or len({p[0] for p in hits}) == 1):
            break
    else:
        raise DataError(f"{source} has no class folders; lay it out as {LAYOUT} "
                        "(one extra top-level folder is allowed)")
    layout = {split: {} for split in SPLITS}
    for p in sorted(hits):
        layout[p[depth]].setdefault(p[depth + 1], []).append((f"{source}:{'/'.join(p)}", files[p]))
    for split in SPLITS:
        if not layout[split]:
            raise DataError(f"{source} has no {split}/<class>/<image> files; lay it out as {LAYOUT}")
    train, test = set(layout["train"]), set(layout["test"])
    if train != test:
        only_train, only_test = (", ".join(sorted(a - b)) or "none" for a, b in [(train, test), (test, train)])
        raise DataError(f"{source}: train and test have different classes (only in train: {only_train}; "
                        f"only in test: {only_test}); give both splits a folder for every class")
    return layout


def _decode(source, layout):
    class_names = tuple(sorted(layout["train"]))
    arrays = {}
    for split, classes in layout.items():
        items = [(name, data) for c in class_names for name, data in classes[c]]
        labels = [label for label, c in enumerate(class_names) for _ in classes[c]]
        arrays[split] = (_decode_all(items), np.asarray(labels, dtype=np.int32))
    return Dataset(*arrays["train"], *arrays["test"], class_names=class_names)


def _decode_all(items):
    workers = min(_usable_cpus(), 8)
    # Each worker process starts by importing cifar_jax and the __main__ module, hence JAX
    # (~1.5 s), so only many images on several cores repay it. spawn, not fork: forking a
    # process whose JAX runtime has started threads can deadlock.
    if len(items) >= _PARALLEL_MIN_IMAGES and workers >= _MIN_WORKERS:
        chunks = [items[i:i + _CHUNK] for i in range(0, len(items), _CHUNK)]
        try:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                return np.concatenate(list(pool.map(_decode_chunk, chunks)))
        except (BrokenProcessPool, OSError, RuntimeError):
            pass  # e.g. a __main__ without the `if __name__ == "__main__"` guard: decode here
    return _decode_chunk(items)


def _usable_cpus():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _decode_chunk(items):
    return np.stack([decode_image(_bytes(data, name), name) for name, data in items])


def _bytes(data, name):
    if not isinstance(data, pathlib.Path):
        return data
    with open(data, "rb") as file:
        content = file.read(MAX_IMAGE_BYTES + 1)  # never more, whatever the file grew to since it was listed
    _check_image_size(name, len(content))
    return content


def _cache_file(source, stamp, cache_dir):
    root = pathlib.Path(cache_dir).expanduser() if cache_dir else (
        pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache") / "cifar_jax")
    where = hashlib.sha256(str(source).encode()).hexdigest()[:12]
    what = hashlib.sha256(repr((_CACHE_VERSION, stamp)).encode()).hexdigest()[:20]
    label = re.sub(r"[^A-Za-z0-9_.-]", "_", source.name)[:40]
    return root / f"image_folder-{label}-{where}-{what}.npz"


def _read_cache(cache_file):
    try:
        with np.load(cache_file, allow_pickle=False) as z:
            dataset = Dataset(z["train_images"], z["train_labels"], z["test_images"], z["test_labels"],
                              tuple(str(n) for n in z["class_names"]))
    except Exception:  # missing, torn or foreign: decode again and overwrite it
        return None
    pairs = [(dataset.train_images, dataset.train_labels), (dataset.test_images, dataset.test_labels)]
    ok = all(images.ndim == 4 and len(images) == len(labels) for images, labels in pairs)
    return dataset if ok else None


def _write_cache(cache_file, dataset):
    tmp = None
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_file.parent, prefix=".tmp-", suffix=".npz")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, train_images=dataset.train_images, train_labels=dataset.train_labels,
                     test_images=dataset.test_images, test_labels=dataset.test_labels,
                     class_names=np.asarray(dataset.class_names, dtype=str))
        os.replace(tmp, cache_file)  # readers see the old file or the whole new one, never half
        tmp = None
        # Older caches of the same source are stale now; drop them so the cache stays small.
        stem = cache_file.name.rsplit("-", 1)[0]
        for old in cache_file.parent.glob(f"{stem}-*.npz"):
            if old != cache_file:
                old.unlink(missing_ok=True)
    except OSError as e:
        warnings.warn(f"could not write the image cache {cache_file} ({e}); images will be decoded "
                      "again next run: set --config.cache_dir to a writable folder", stacklevel=3)
    finally:
        if tmp is not None:
            pathlib.Path(tmp).unlink(missing_ok=True)
