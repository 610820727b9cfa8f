"""cifar_jax.torch_hub's cache and downloads, with plain bytes for weight files (no torch
needed): a cached file's sha256 prefix is checked once and remembered, a swapped one is
refused, and the download is bounded like the CIFAR archive's (tests/test_download.py)."""
import hashlib
import os

import pytest

from cifar_jax import torch_hub
from cifar_jax.data import fetch
from cifar_jax.errors import CifarJaxError
from tests import cifar_files
from tests.file_server import FileServer, endless

BODY = b"pretend these are weights" * 400
NAME = f"resnet18-{hashlib.sha256(BODY).hexdigest()[:8]}.pth"
NOWHERE = "http://127.0.0.1:9/models/"  # refused at once, if ever asked


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "BACKOFF_S", 0.01)
    return tmp_path / "hub" / "checkpoints"


def _cache(folder, body=BODY, name=NAME):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(body)
    return folder / name


def _count_hashing(monkeypatch):
    calls = []
    real = torch_hub.digest_of
    monkeypatch.setattr(torch_hub, "digest_of", lambda file, name: calls.append(name) or real(file, name))
    return calls


def test_a_cached_file_is_hashed_once_then_trusted_while_unchanged(folder, monkeypatch):
    target = _cache(folder)
    calls = _count_hashing(monkeypatch)
    assert torch_hub.fetch(NAME, folder, NOWHERE + NAME) == target
    assert torch_hub.fetch(NAME, folder, NOWHERE + NAME) == target
    assert calls == ["sha256"]
    assert (folder / (NAME + torch_hub.VERIFIED_SUFFIX)).is_file()


def test_a_cached_file_with_the_wrong_hash_is_refused(folder):
    target = _cache(folder, body=b"not the weights" * 100)
    with pytest.raises(CifarJaxError) as error:
        torch_hub.fetch(NAME, folder, NOWHERE + NAME)
    cifar_files.assert_one_line(error, str(target), "does not start with", NAME.split("-")[1][:8],
                                "delete it to download it again")
    assert target.read_bytes() == b"not the weights" * 100  # refused, not deleted: the user decides


def test_a_file_swapped_after_its_check_is_refused(folder):
    target = _cache(folder)
    torch_hub.fetch(NAME, folder, NOWHERE + NAME)  # checked and remembered
    before = os.stat(target)
    target.write_bytes(bytes(len(BODY)))  # same size; the mtime is put back, as an attacker could
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(CifarJaxError) as error:
        torch_hub.fetch(NAME, folder, NOWHERE + NAME)
    cifar_files.assert_one_line(error, "does not start with")


def test_a_planted_marker_link_is_ignored(folder, monkeypatch, tmp_path):
    _cache(folder)
    elsewhere = tmp_path / "forged.verified"
    elsewhere.write_text('{"sha256": "x"}')
    (folder / (NAME + torch_hub.VERIFIED_SUFFIX)).symlink_to(elsewhere)
    calls = _count_hashing(monkeypatch)
    torch_hub.fetch(NAME, folder, NOWHERE + NAME)
    assert calls == ["sha256"]  # hashed: the link vouches for nothing (and was replaced by a file)
    assert elsewhere.read_text() == '{"sha256": "x"}'


def test_a_download_is_remembered_as_checked(folder, monkeypatch):
    calls = _count_hashing(monkeypatch)
    with FileServer(BODY, path=f"/models/{NAME}") as server:
        target = torch_hub.fetch(NAME, folder, server.url())
    assert target.read_bytes() == BODY
    assert sorted(p.name for p in folder.iterdir()) == [NAME, NAME + torch_hub.VERIFIED_SUFFIX]
    torch_hub.fetch(NAME, folder, NOWHERE + NAME)
    assert calls == ["sha256"]  # the download's own check: not hashed again


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



def test_an_unreachable_server_says_where_to_put_the_file(folder):
    with pytest.raises(CifarJaxError) as error:
        torch_hub.fetch(NAME, folder, NOWHERE + NAME)
    cifar_files.assert_one_line(error, "cannot download", "offline?", f"put {NAME} into {folder}")
    assert not folder.exists() or not any(folder.iterdir())  # no .part, no lock left behind


def test_a_name_without_a_hash_is_not_checked_and_an_unreadable_file_is_one_line(folder):
    plain = _cache(folder, name="resnet18.pth")
    torch_hub.check_cached(plain)  # torch.hub checks no hash without one in the name: nor do we
    assert sorted(p.name for p in folder.iterdir()) == ["resnet18.pth"]  # and vouches for nothing
    (folder / NAME).mkdir()  # unreadable as a file
    with pytest.raises(CifarJaxError) as error:
        torch_hub.check_cached(folder / NAME)
    cifar_files.assert_one_line(error, "cannot read", NAME, "delete it to download it again")
