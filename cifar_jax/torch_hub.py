"""torchvision's pretrained weight files: names, the local cache, and downloading them.

A weight name such as `ResNet50_Weights.IMAGENET1K_V2` stands for torchvision's file
`resnet50-11ad3fa6.pth` (WEIGHTS). It is looked up where torch.hub keeps it,
`$TORCH_HOME/hub/checkpoints` (TORCH_HOME defaults to `~/.cache/torch`), so a file that
PyTorch already downloaded, or one copied there by hand, is used as it is. A missing file
is downloaded from BASE_URL with the project's downloader (cifar_jax.data.fetch: timeouts,
redirects, Range resume into FILE.part, retries), under a lock so that one process
downloads while others wait, checked as torch.hub checks it (the sha256 of the file starts
with the hex digits after the last "-" of its name) and only then renamed into place.

Unlike torch.hub, a file found in the cache is checked too (a damaged or swapped file is
refused in one line), once: the result is remembered next to it in FILE.verified, with the
file's size, mtime, ctime and inode, and the file is hashed again when any of them changes.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import tempfile

from cifar_jax.data.fetch import Wording, digest_of, fetch_verified
from cifar_jax.data.http_transfer import DiskProblem, TooSlow
from cifar_jax.data.safe_open import UnsafeFile, open_no_follow
from cifar_jax.errors import CifarJaxError

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
# Each file's size in MiB, as torchvision's Weights metadata gives it (`_file_size`, 3 decimals):
# a download never writes more than this (rounded up), whatever the server sends.
FILE_MIB = {
    "resnet18-f37072fd.pth": 44.661, "resnet50-0676ba61.pth": 97.781, "resnet50-11ad3fa6.pth": 97.79,
    "resnet152-394f9c45.pth": 230.434, "resnet152-f82ba261.pth": 230.474, "vgg16-397923af.pth": 527.796,
    "vgg16_bn-6c64b313.pth": 527.866, "mobilenet_v2-b0353104.pth": 13.555, "mobilenet_v2-7ebf99e0.pth": 13.598,
    "efficientnet_b0_rwightman-7f5810bc.pth": 20.451,
}
MAX_FILE_BYTES = 1 << 30  # a file not in FILE_MIB (above the largest there, 528 MiB)
VERIFIED_SUFFIX = ".verified"
_WEIGHT_NAME = re.compile(r"\w+_Weights\.\w+")
_HASH = re.compile(r"-([a-f0-9]*)\.")  # torch.hub's HASH_REGEX
TIMEOUT_S = 60.0
ELSEWHERE = "or download the file elsewhere and pass --config.pretrained=PATH"


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
    another process downloads it); its sha256 prefix is checked either way."""
    target = folder / file_name
    if target.is_file():
        check_cached(target)
        return target
    downloaded = {}

    def verify(file) -> str | None:
        actual = downloaded["sha256"] = digest_of(file, "sha256")
        return None if actual.startswith(hash_prefix(file_name)) else (
            f"has sha256 {actual}, which does not start with {hash_prefix(file_name)} as its name says")

    def fatal(error) -> str:
        if isinstance(error, TooSlow):
            return (f"downloading {url} is far too slow to finish: {error}; put {file_name} into {folder} "
                    f"(torch.hub's cache), {ELSEWHERE}")
        if isinstance(error, DiskProblem):
            return f"{error}; free space there or set TORCH_HOME=DIR on a disk with room, {ELSEWHERE}"
        return f"cannot download {url} ({error}); offline? put {file_name} into {folder} (torch.hub's cache), {ELSEWHERE}"

    wording = Wording(
        CifarJaxError, unwritable=f" to download {file_name}; set TORCH_HOME=DIR (files go to DIR/hub/checkpoints)",
        fatal=fatal, retry=ELSEWHERE, invalid=f"Try again, or put a verified copy at {target}")
    most = round((FILE_MIB[file_name] + 0.001) * 2**20) if file_name in FILE_MIB else MAX_FILE_BYTES
    fetch_verified(url, target, timeout=timeout, verify=verify, wording=wording, most=most)
    check_cached(target, downloaded.get("sha256"))
    return target


def check_cached(path: pathlib.Path, sha256: str | None = None) -> None:
    """CifarJaxError (one line) unless the sha256 of `path` starts with the prefix its name
    gives. Hashes the file only when PATH.verified does not vouch for this version of it
    (`sha256`: the digest already computed, e.g. by the download), then writes that."""
    prefix = hash_prefix(path.name)
    if not prefix:
        return  # a name without a hash: nothing to check against, as for torch.hub
    marker = path.with_name(path.name + VERIFIED_SUFFIX)
    try:
        with open(path, "rb") as file:
            stamp = _stamp(os.fstat(file.fileno()))
            if _remembered(marker) == stamp and sha256 is None:
                return
            actual = sha256 or digest_of(file, "sha256")
    except OSError as error:
        raise CifarJaxError(f"cannot read {path} ({error.strerror or error}); check the file, or delete it to "
                            "download it again") from None
    if not actual.startswith(prefix):
        raise CifarJaxError(f"{path} has sha256 {actual}, which does not start with {prefix} as its name says: it "
                            f"is damaged or was replaced; delete it to download it again, {ELSEWHERE}")
    _remember(marker, {**stamp, "sha256": actual})


def _stamp(status: os.stat_result) -> dict:
    return {"size": status.st_size, "mtime_ns": status.st_mtime_ns, "ctime_ns": status.st_ctime_ns,
            "inode": status.st_ino}


def _remembered(marker: pathlib.Path) -> dict | None:
    """The stamp a marker of this user vouches for (without its sha256), or None."""
    try:
        with os.fdopen(open_no_follow(marker, os.O_RDONLY), "rb") as file:
            values = json.loads(file.read(4096))
        values.pop("sha256")
        return values
    except (OSError, UnsafeFile, ValueError, TypeError, AttributeError, KeyError):
        return None  # missing, another user's, a link, or unreadable: hash again


def _remember(marker: pathlib.Path, values: dict) -> None:
    """Writes the marker atomically; a folder this user cannot write to just means hashing again."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=marker.parent, prefix=f".{marker.name}.")
        with os.fdopen(fd, "w") as file:
            json.dump(values, file)
        os.replace(tmp, marker)
        tmp = None
    except OSError:
        pass
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
