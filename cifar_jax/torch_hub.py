"""torchvision's pretrained weight files: names, the local cache, and downloading them.

A weight name such as `ResNet50_Weights.IMAGENET1K_V2` stands for torchvision's file
`resnet50-11ad3fa6.pth` (WEIGHTS). It is looked up where torch.hub keeps it,
`$TORCH_HOME/hub/checkpoints` (TORCH_HOME defaults to `~/.cache/torch`), so a file that
PyTorch already downloaded, or one copied there by hand, is used as it is. A missing file
is downloaded from BASE_URL with the project's downloader (cifar_jax.data.http_transfer:
timeouts, redirects, Range resume into FILE.part), under a lock so that one process
downloads while others wait, checked as torch.hub checks it (the sha256 of the file starts
with the hex digits after the last "-" of its name) and only then renamed into place.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pathlib
import re
import time

from cifar_jax.data import download as data_download
from cifar_jax.data.http_transfer import (Broken, DiskProblem, NoConnection, RangeNotSatisfiable, Refused,
                                          fetch_into)
from cifar_jax.errors import CifarJaxError, one_line

BASE_URL = "https://download.pytorch.org/models/"
# Weight name -> (architecture, file name), from the Weights enums of torchvision 0.28
# (torchvision/models/resnet.py, vgg.py, mobilenetv2.py, efficientnet.py: each `url`).
# VGG16_Weights.IMAGENET1K_FEATURES (vgg16_features-amdegroot-88682ab5.pth) is left out:
# its classifier holds no trained values and it expects other normalisation.
WEIGHTS = {
    "ResNet18_Weights.IMAGENET1K_V1": ("resnet18", "resnet18-f37072fd.pth"),
    "ResNet50_Weights.IMAGENET1K_V1": ("resnet50", "resnet50-0676ba61.pth"),
    "ResNet50_Weights.IMAGENET1K_V2": ("resnet50", "resnet50-11ad3fa6.pth"),
    "ResNet152_Weights.IMAGENET1K_V1": ("resnet152", "resnet152-394f9c45.pth"),
    "ResNet152_Weights.IMAGENET1K_V2": ("resnet152", "resnet152-f82ba261.pth"),
    "VGG16_Weights.IMAGENET1K_V1": ("vgg16", "vgg16-397923af.pth"),
    "VGG16_BN_Weights.IMAGENET1K_V1": ("vgg16_bn", "vgg16_bn-6c64b313.pth"),
    "MobileNet_V2_Weights.IMAGENET1K_V1": ("mobilenet_v2", "mobilenet_v2-b0353104.pth"),
    "MobileNet_V2_Weights.IMAGENET1K_V2": ("mobilenet_v2", "mobilenet_v2-7ebf99e0.pth"),
    "EfficientNet_B0_Weights.IMAGENET1K_V1": ("efficientnet_b0", "efficientnet_b0_rwightman-7f5810bc.pth"),
}
# torchvision's DEFAULT of each enum.
DEFAULTS = {
    "ResNet18_Weights.DEFAULT": "ResNet18_Weights.IMAGENET1K_V1",
    "ResNet50_Weights.DEFAULT": "ResNet50_Weights.IMAGENET1K_V2",
    "ResNet152_Weights.DEFAULT": "ResNet152_Weights.IMAGENET1K_V2",
    "VGG16_Weights.DEFAULT": "VGG16_Weights.IMAGENET1K_V1",
    "VGG16_BN_Weights.DEFAULT": "VGG16_BN_Weights.IMAGENET1K_V1",
    "MobileNet_V2_Weights.DEFAULT": "MobileNet_V2_Weights.IMAGENET1K_V2",
    "EfficientNet_B0_Weights.DEFAULT": "EfficientNet_B0_Weights.IMAGENET1K_V1",
}
_WEIGHT_NAME = re.compile(r"\w+_Weights\.\w+")
_HASH = re.compile(r"-([a-f0-9]*)\.")  # torch.hub's HASH_REGEX
TIMEOUT_S = 60.0


class _Hints:
    """What download messages suggest instead (data_download.Options' role for CIFAR)."""

    mirror_hint = "or download the file elsewhere and pass --config.pretrained=PATH"
    data_dir_hint = "set TORCH_HOME=DIR (files go to DIR/hub/checkpoints)"


def is_weight_name(spec: str) -> bool:
    """Whether `spec` is written as a torchvision weight name (Enum.MEMBER) and is not the
    path of an existing file."""
    return bool(_WEIGHT_NAME.fullmatch(spec)) and not pathlib.Path(spec).expanduser().is_file()


def weight_entry(name: str) -> tuple[str, str]:
    """(architecture, file name) of a weight name; CifarJaxError naming the known ones."""
    entry = WEIGHTS.get(DEFAULTS.get(name, name))
    if entry is None:
        raise CifarJaxError(f"unknown torchvision weights {name!r}; known: {', '.join(WEIGHTS)} (or a .DEFAULT), "
                            "or pass the path of a .pth file")
    return entry


def checkpoints_dir() -> pathlib.Path:
    """torch.hub's folder of downloaded weights: $TORCH_HOME/hub/checkpoints."""
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "torch")
    return pathlib.Path(home).expanduser().absolute() / "hub" / "checkpoints"


def hash_prefix(file_name: str) -> str:
    """The sha256 prefix torch.hub checks: the hex digits between a "-" and the "." of the name."""
    found = _HASH.search(file_name)
    return found.group(1) if found else ""


def resolve(spec: str, timeout: float = TIMEOUT_S) -> pathlib.Path:
    """The local file of a weight name (found in checkpoints_dir() or downloaded there), or
    the path `spec` itself."""
    if not is_weight_name(spec):
        path = pathlib.Path(spec).expanduser()
        if not path.is_file():
            raise CifarJaxError(f"pretrained weights {spec!r}: no such file; pass a torchvision .pth state_dict or a "
                                "weight name such as ResNet50_Weights.IMAGENET1K_V2")
        return path
    _, file_name = weight_entry(spec)
    return fetch(file_name, checkpoints_dir(), BASE_URL + file_name, timeout)


def fetch(file_name: str, folder: pathlib.Path, url: str, timeout: float = TIMEOUT_S) -> pathlib.Path:
    """folder/file_name, downloaded from `url` first if it is not there (or awaited while
    another process downloads it)."""
    target = folder / file_name
    if target.is_file():
        return target
    lock = folder / f"{file_name}.lock"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:
        raise CifarJaxError(f"cannot write to {folder} ({one_line(error)}) to download {file_name}; "
                            f"{_Hints.data_dir_hint}") from None
    with _exclusive(lock_fd, file_name, folder):
        if not target.is_file():  # another process may have finished it meanwhile
            _download(url, folder / f"{file_name}.part", target, timeout)
            lock.unlink(missing_ok=True)
    return target


@contextlib.contextmanager
def _exclusive(lock_fd: int, file_name: str, folder: pathlib.Path):
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another process that is downloading {file_name} into {folder}")
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
        except OSError:  # a file system without locks: go on unguarded
            pass
        yield
    finally:
        os.close(lock_fd)


def _download(url: str, part: pathlib.Path, target: pathlib.Path, timeout: float) -> None:
    progress = data_download.Progress(target, _Hints, hint_slow=False)  # the CIFAR download's bar (MB, rate, ETA)
    say(f"downloading {url} to {target}")
    failures, delay = 0, data_download.BACKOFF_S
    try:
        while True:
            try:
                fetch_into(url, part, timeout, progress.start, progress.advance)
                break
            except RangeNotSatisfiable as error:  # the part file is complete (or too long)
                if _sha256_ok(part, target.name):
                    break
                part.unlink(missing_ok=True)
                problem = error
            except Broken as error:
                problem = error
            except (NoConnection, Refused, DiskProblem) as error:
                raise CifarJaxError(f"cannot download {url} ({error}); offline? put {target.name} into {target.parent} "
                                    f"(torch.hub's cache), {_Hints.mirror_hint}") from None
            failures += 1
            if failures >= data_download.MAX_FAILURES:
                raise CifarJaxError(f"downloading {url} failed {failures} times (last: {problem}); try again later "
                                    f"(what arrived stays in {part}), {_Hints.mirror_hint}") from None
            progress.close()
            say(f"{target.name}: {problem}; trying again in {delay:g} s")
            time.sleep(delay)
            delay = min(2 * delay, data_download.MAX_BACKOFF_S)
    finally:
        progress.close()
    if not _sha256_ok(part, target.name):
        actual = sha256_of(part)
        part.unlink()
        raise CifarJaxError(f"the file from {url} has sha256 {actual}, which does not start with "
                            f"{hash_prefix(target.name)} as its name says; it was deleted. Try again, or put a "
                            f"verified copy at {target}")
    with open(part, "rb") as file:
        os.fsync(file.fileno())
    os.replace(part, target)


def sha256_of(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sha256_ok(path: pathlib.Path, file_name: str) -> bool:
    return path.is_file() and sha256_of(path).startswith(hash_prefix(file_name))


say = data_download.say
