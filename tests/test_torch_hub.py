"""cifar_jax.torch_hub's downloads, with plain bytes for weight files (no torch needed):
bounded like the CIFAR archive's (tests/test_download.py)."""
import hashlib

import pytest

from cifar_jax import torch_hub
from cifar_jax.data import fetch
from cifar_jax.errors import CifarJaxError
from tests import cifar_files
from tests.file_server import FileServer, endless

BODY = b"pretend these are weights" * 400
NAME = f"resnet18-{hashlib.sha256(BODY).hexdigest()[:8]}.pth"


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "BACKOFF_S", 0.01)
    return tmp_path / "hub" / "checkpoints"


def test_an_endless_weight_download_stops_at_the_files_size(folder, monkeypatch):
    monkeypatch.setitem(torch_hub.FILE_MIB, NAME, len(BODY) / 2**20)
    with FileServer(BODY, path=f"/models/{NAME}") as server:
        server.default = endless()
        with pytest.raises(CifarJaxError) as error:
            torch_hub.fetch(NAME, folder, server.url())
    cifar_files.assert_one_line(error, "more than the", "bytes the file can have")
    assert list(folder.iterdir()) == []


def test_a_planted_part_link_in_the_cache_is_refused(folder, tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"mine")
    folder.mkdir(parents=True)
    (folder / (NAME + ".part")).symlink_to(victim)
    with FileServer(BODY, path=f"/models/{NAME}") as server:
        with pytest.raises(CifarJaxError) as error:
            torch_hub.fetch(NAME, folder, server.url())
    cifar_files.assert_one_line(error, "refusing", "symbolic link")
    assert victim.read_bytes() == b"mine"

