"""Downloading the CIFAR archive: a real HTTP server on 127.0.0.1 in a thread serves a small
archive in the official layout, and misbehaves as each test scripts it. The official md5
is swapped for the small archive's; nothing touches the network or the real ~/.cache."""
import dataclasses
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from cifar_jax import download as download_cli
from cifar_jax.data import cifar_archive, cifar_download, fetch, load_dataset, safe_open
from cifar_jax.data.cifar_archive import md5_of
from cifar_jax.errors import ConfigError, DataError
from tests import cifar_files, disks
from tests.file_server import (FileServer, announce, drip, drop_after, endless, pause_after, redirect, serve,
                               stall_after, status, wait_for)

ARCHIVE = "cifar-100-python.tar.gz"
PART = ARCHIVE + ".part"
CHILD_WAIT_S = 300.0  # a child process imports jax first: slow on a loaded machine, so wait long


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """(archive bytes, train split, test split): 60 random images, about 230 kB."""
    rng = np.random.default_rng(0)
    train, test = cifar_files.random_cifar_split(rng, 40, 100), cifar_files.random_cifar_split(rng, 20, 100)
    path = cifar_files.write_cifar_archive(tmp_path_factory.mktemp("source"), "cifar100", train, test)
    return path.read_bytes(), train, test


@pytest.fixture
def body(source):
    return source[0]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch, source):
    """The small archive's md5 and size as the official ones; data_dir in tmp_path; short waits."""
    variant = cifar_archive.VARIANTS["cifar100"]
    monkeypatch.setitem(cifar_archive.VARIANTS, "cifar100",
                        dataclasses.replace(variant, md5=hashlib.md5(source[0]).hexdigest(), size=len(source[0])))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # a default data_dir never reaches the real cache
    monkeypatch.setenv("CIFAR_JAX_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("CIFAR_JAX_DATA_URL", raising=False)
    monkeypatch.setattr(fetch, "BACKOFF_S", 0.01)


@pytest.fixture
def server(body):
    with FileServer(body) as running:
        yield running


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


def _load(url, timeout=10.0, **overrides):
    config = cifar_files.make_config(dataset="cifar100", data_url=url, download_timeout=timeout, **overrides)
    return load_dataset(config)


def _assert_read_correctly(data, source):
    _, (train_images, train_labels), (test_images, test_labels) = source
    np.testing.assert_array_equal(data.train_images, train_images)
    np.testing.assert_array_equal(data.train_labels, train_labels)
    np.testing.assert_array_equal(data.test_images, test_images)
    np.testing.assert_array_equal(data.test_labels, test_labels)


def _failed_cleanly(data_dir, error, *fragments):
    """One line naming `fragments`, nothing under the archive's name, and no lock file."""
    message = cifar_files.assert_one_line(error, *fragments)
    assert not (data_dir / ARCHIVE).exists()
    assert not (data_dir / f"{ARCHIVE}.lock").exists()
    return message


def test_complete_download_then_load_dataset_reads_it(server, source, data_dir, capsys):
    data = _load(server.url())
    _assert_read_correctly(data, source)
    assert sorted(p.name for p in data_dir.iterdir()) == [ARCHIVE]  # no .part, no .lock left
    assert (data_dir / ARCHIVE).read_bytes() == source[0]
    assert "downloading" in capsys.readouterr().err
    _load(server.url())  # the second run reads the archive, without asking the server
    assert len(server.gets()) == 1


def test_dropped_connection_resumes_with_range(server, body, data_dir):
    half = len(body) // 2
    server.script(drop_after(half))
    _load(server.url())
    first, second = server.gets()
    assert "Range" not in first[2]
    assert second[2]["Range"] == f"bytes={half}-"
    assert (data_dir / ARCHIVE).read_bytes() == body


def test_server_that_ignores_range_starts_over(server, body, data_dir):
    data_dir.mkdir()
    (data_dir / PART).write_bytes(b"not the start of the archive" * 40)
    server.default = serve(honour_range=False)
    _load(server.url())
    (request,) = server.gets()
    assert request[2]["Range"] == f"bytes={len(b'not the start of the archive') * 40}-"
    assert (data_dir / ARCHIVE).read_bytes() == body
    assert not (data_dir / PART).exists()


def test_a_server_that_ignores_range_and_drops_at_one_spot_is_given_up(server, body, data_dir):
    server.default = drop_after(len(body) // 2, honour_range=False)  # every attempt ends at the same byte
    with pytest.raises(DataError) as error:
        _load(server.url())
    _failed_cleanly(data_dir, error, f"failed {fetch.MAX_FAILURES} times in a row", "the connection closed",
                    f"{data_dir / PART} are kept")
    assert len(server.gets()) == fetch.MAX_FAILURES  # the first got halfway: a streak of one failure


def test_stall_past_the_read_timeout_is_retried(server, body, data_dir):
    half = len(body) // 2
    server.script(stall_after(half))  # silent until the test ends, far past the timeout
    start = time.monotonic()
    _load(server.url(), timeout=1.0)
    assert time.monotonic() - start < 60  # generous for a loaded machine; the stall itself is endless
    assert [r[2].get("Range") for r in server.gets()] == [None, f"bytes={half}-"]
    assert (data_dir / ARCHIVE).read_bytes() == body


@pytest.mark.parametrize("code", [404, 403])
def test_client_errors_are_one_line_and_not_retried(server, data_dir, code):
    server.script(status(code))
    with pytest.raises(DataError) as error:
        _load(server.url())
    _failed_cleanly(data_dir, error, server.url(), f"HTTP {code}", "--config.data_url=URL",
                    str(data_dir / ARCHIVE))
    assert len(server.gets()) == 1
    assert list(data_dir.iterdir()) == []  # no .part, and no empty .lock left behind either


def test_server_errors_are_retried(server, body, data_dir):
    server.script(status(500), status(500))
    _load(server.url())
    assert len(server.gets()) == 3
    assert (data_dir / ARCHIVE).read_bytes() == body


def test_server_errors_give_up_after_a_bounded_number_of_tries(server, data_dir):
    server.default = status(503)
    with pytest.raises(DataError) as error:
        _load(server.url())
    _failed_cleanly(data_dir, error, server.url(), f"failed {fetch.MAX_FAILURES} times in a row",
                    "HTTP 503", "--config.data_url", str(data_dir / ARCHIVE))
    assert len(server.gets()) == fetch.MAX_FAILURES


def test_redirect_is_followed(server, body, data_dir):
    server.script(redirect("/moved/here"), redirect(server.url(), 301))  # a relative, then an absolute URL
    _load(server.url("/old"))
    assert [r[1] for r in server.gets()] == ["/old", "/moved/here", server.path]
    assert (data_dir / ARCHIVE).read_bytes() == body


def test_redirect_loop_is_an_error(server, data_dir):
    server.script(redirect("/b"), redirect("/a"))
    with pytest.raises(DataError) as error:
        _load(server.url("/a"))
    _failed_cleanly(data_dir, error, "redirect loop", server.url("/a"))
    assert len(server.gets()) == 2


def test_too_many_redirects_is_an_error(server, data_dir):
    server.default = redirect("/next")
    server.script(*(redirect(f"/hop{i}") for i in range(20)))
    with pytest.raises(DataError) as error:
        _load(server.url("/start"))
    _failed_cleanly(data_dir, error, "more than 10 redirects")
    assert len(server.gets()) == 11


def test_wrong_checksum_deletes_the_file(server, body, data_dir, monkeypatch):
    variant = cifar_archive.VARIANTS["cifar100"]
    monkeypatch.setitem(cifar_archive.VARIANTS, "cifar100", dataclasses.replace(variant, md5="0" * 32))
    with pytest.raises(DataError) as error:
        _load(server.url())
    _failed_cleanly(data_dir, error, server.url(), "0" * 32, hashlib.md5(body).hexdigest(), "deleted")
    assert not (data_dir / PART).exists()


def test_a_complete_part_file_from_an_earlier_run_is_accepted(server, body, data_dir):
    data_dir.mkdir()
    (data_dir / PART).write_bytes(body)  # e.g. killed between the last byte and the rename
    _load(server.url())
    (request,) = server.gets()
    assert request[2]["Range"] == f"bytes={len(body)}-"  # answered 416: nothing left to send
    assert (data_dir / ARCHIVE).read_bytes() == body


def test_a_long_eta_prints_how_to_avoid_the_wait_once(server, monkeypatch, capsys):
    monkeypatch.setattr(fetch, "SLOW_ETA_S", 0.0)
    monkeypatch.setattr(fetch, "ETA_AFTER_S", 0.0)
    _load(server.url())
    err = capsys.readouterr().err
    assert err.count("Rather than wait") == 1
    assert "--config.data_url=URL" in err and "CIFAR_JAX_DATA_URL" in err


# Hostile servers and planted files: each ends in one line, with nothing written elsewhere,
# nothing larger than the archive kept, and no transfer that goes on forever.

@pytest.mark.parametrize("honour_range", [True, False])  # the server would append, or overwrite from byte 0
def test_a_planted_part_symlink_is_refused_and_nothing_is_written_through_it(server, data_dir, tmp_path,
                                                                               honour_range):
    server.default = serve(honour_range=honour_range)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"the user's own file\n")
    data_dir.mkdir()
    (data_dir / PART).symlink_to(victim)
    with pytest.raises(DataError) as error:
        _load(server.url())
    _failed_cleanly(data_dir, error, f"refusing {data_dir / PART}", "symbolic link", str(victim), "remove it")
    assert victim.read_bytes() == b"the user's own file\n"
    assert not server.gets()  # refused before asking: nothing was received to write anywhere
    assert sorted(p.name for p in data_dir.iterdir()) == [PART]  # the link is left for the user to look at


def test_a_planted_lock_symlink_is_refused_and_creates_nothing(server, data_dir, tmp_path):
    data_dir.mkdir()
    (data_dir / (ARCHIVE + ".lock")).symlink_to(tmp_path / "created_by_the_victim")
    with pytest.raises(DataError) as error:
        _load(server.url())
    _failed_cleanly(data_dir, error, "refusing", ".lock", "symbolic link")
    assert not (tmp_path / "created_by_the_victim").exists() and not server.gets()


@pytest.mark.parametrize("flags", [os.O_RDONLY, os.O_RDWR, os.O_WRONLY | os.O_CREAT])
def test_open_no_follow_refuses_a_fifo_without_waiting_and_a_folder(tmp_path, flags):
    os.mkfifo(tmp_path / "fifo")  # opening it plainly would wait for a writer (or reader) forever
    (tmp_path / "folder").mkdir()
    for name in ("fifo", "folder"):
        try:
            os.close(safe_open.open_no_follow(tmp_path / name, flags))
        except safe_open.UnsafeFile as error:
            assert "not a regular file" in str(error)
        except IsADirectoryError:
            assert name == "folder" and flags != os.O_RDONLY  # a folder cannot be opened for writing
        else:
            raise AssertionError(f"{name} was opened with flags {flags}")


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_another_users_part_file_is_refused(server, body, data_dir):
    data_dir.mkdir()
    (data_dir / PART).write_bytes(b"planted")
    os.chown(data_dir / PART, 54321, -1)
    with pytest.raises(DataError) as error:
        _load(server.url())
    _failed_cleanly(data_dir, error, f"refusing {data_dir / PART}", "another user (uid 54321)")
    assert (data_dir / PART).read_bytes() == b"planted"


def test_an_endless_body_stops_at_the_archive_size(server, body, data_dir):
    server.default = endless()  # no Content-Length: only the archive's known size bounds it
    with pytest.raises(DataError) as error:
        _load(server.url())
    _failed_cleanly(data_dir, error, server.url(), f"more than the {len(body):,} bytes", "part file was deleted")
    assert list(data_dir.iterdir()) == []
    assert len(server.gets()) == 1  # not retried: another attempt would get the same
    # What the server could push into socket buffers before the client hung up, not 64 MB.
    assert server.sent_after_body < 16 << 20


def test_a_content_length_that_disagrees_is_refused_before_writing(server, body, data_dir):
    data_dir.mkdir()
    (data_dir / PART).write_bytes(body[:1000])  # an earlier run's start: kept as it is
    server.default = announce(10**15)  # a 200 answer (Range ignored) announcing a petabyte
    with pytest.raises(DataError) as error:
        _load(server.url())
    message = cifar_files.assert_one_line(error, "announces a file of 1,000,000,000,000,000 bytes",
                                          f"this file has {len(body):,}", "--config.data_url=URL")
    assert "MB more" not in message  # no space estimate from the server's claim
    assert (data_dir / PART).read_bytes() == body[:1000] and not (data_dir / ARCHIVE).exists()


def test_a_part_file_larger_than_the_archive_is_deleted_and_the_download_starts_over(server, body, data_dir,
                                                                                       capsys):
    data_dir.mkdir()
    (data_dir / PART).write_bytes(b"j" * (len(body) + 1))  # e.g. junk an older version kept
    _load(server.url())
    (request,) = server.gets()
    assert "Range" not in request[2]
    assert (data_dir / ARCHIVE).read_bytes() == body
    assert f"deleted {data_dir / PART}" in capsys.readouterr().err


def test_a_slow_drip_server_is_ended_with_the_mirror_hint(server, data_dir, monkeypatch):
    monkeypatch.setattr(fetch, "RATE_WINDOW_S", 0.5)
    monkeypatch.setattr(fetch, "MAX_ETA_S", 60.0)  # the 0.2 MB at ~400 B/s would take ~10 min
    server.script(drip(20, 0.05, for_s=5.0))  # then the whole file: today's code would finish it
    start = time.monotonic()
    with pytest.raises(DataError) as error:
        _load(server.url())
    assert time.monotonic() - start < 4.5  # ended by the rate rule, well before the drip stops
    _failed_cleanly(data_dir, error, server.url(), "far too slow to finish", "bytes arrived in the last",
                    "would take", "--config.data_url=URL", "CIFAR_JAX_DATA_URL=URL", f"{PART} keeps the")
    assert len(server.gets()) == 1  # not retried: the same server would drip again


def test_a_long_eta_is_hinted_also_without_a_content_length(server, monkeypatch, capsys):
    monkeypatch.setattr(fetch, "SLOW_ETA_S", 0.0)
    monkeypatch.setattr(fetch, "ETA_AFTER_S", 0.0)
    server.default = serve(length=False)  # the ETA comes from the archive's known size
    _load(server.url())
    assert capsys.readouterr().err.count("Rather than wait") == 1


def test_a_part_file_swapped_while_it_is_checked_never_gets_the_archives_name(server, body, data_dir):
    def swap_then_pass(file):
        (data_dir / PART).unlink()
        (data_dir / PART).write_bytes(b"swapped in by someone else")
        return None  # the bytes that were checked were right

    wording = fetch.Wording(DataError, unwritable="", fatal=str, retry="", invalid="")
    with pytest.raises(DataError) as error:
        fetch.fetch_verified(server.url(), data_dir / ARCHIVE, timeout=10.0, verify=swap_then_pass,
                             wording=wording, size=len(body))
    cifar_files.assert_one_line(error, "was replaced while it was checked")
    assert not (data_dir / ARCHIVE).exists()


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again: connecting there is refused


def test_connection_refused_fails_within_seconds(data_dir):
    url = f"http://127.0.0.1:{_free_port()}/{ARCHIVE}"
    start = time.monotonic()
    with pytest.raises(DataError) as error:
        _load(url)
    assert time.monotonic() - start < 10
    _failed_cleanly(data_dir, error, f"cannot connect to {url}", "offline?", str(data_dir / ARCHIVE),
                    "--config.data_url=URL", "CIFAR_JAX_DATA_URL")


def test_dns_failure_fails_within_seconds(data_dir, monkeypatch):
    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    start = time.monotonic()
    with pytest.raises(DataError) as error:
        _load("")  # the official URL
    assert time.monotonic() - start < 10
    _failed_cleanly(data_dir, error, f"cannot connect to https://www.cs.toronto.edu/~kriz/{ARCHIVE}",
                    "Name or service not known", str(data_dir / ARCHIVE), "--config.data_url=URL")


def test_full_disk_before_the_transfer_names_the_space_needed(server, tmp_path, monkeypatch):
    with disks.tiny_disk(tmp_path / "disk", "64k") as disk:
        monkeypatch.setenv("CIFAR_JAX_DATA", str(disk))
        with pytest.raises(DataError) as error:  # Content-Length is known: refused before writing
            _load(server.url())
        _failed_cleanly(disk, error, str(disk / PART), "MB free", f"{len(server.body) / 1e6:.1f} MB more",
                        "--config.data_dir=DIR")


def test_full_disk_during_the_transfer_keeps_only_what_can_be_the_archive(server, body, tmp_path, monkeypatch):
    half = len(body) // 2
    server.script(pause_after(half))  # the disk fills up (another process) while the transfer waits
    with disks.tiny_disk(tmp_path / "disk", "1m") as disk:
        monkeypatch.setenv("CIFAR_JAX_DATA", str(disk))

        def fill_then_release():
            wait_for(lambda: (disk / PART).exists() and (disk / PART).stat().st_size == half, 60, "half the file")
            disks.fill(disk)
            server.release()

        filler = threading.Thread(target=fill_then_release, daemon=True)
        filler.start()
        with pytest.raises(DataError) as error:
            _load(server.url())
        filler.join(60)
        message = _failed_cleanly(disk, error, str(disk / PART), "No space left", "MB more", "--config.data_dir=DIR",
                                  f"{PART} keeps the", "MB received", "checks the md5", "delete it to start over")
        assert "is kept to resume from" not in message
        assert 0 < (disk / PART).stat().st_size <= len(body)
        assert (disk / PART).read_bytes() == body[:(disk / PART).stat().st_size]


def test_unwritable_data_dir_names_the_path_and_the_space_needed(server, tmp_path):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(DataError) as error:
        _load(server.url(), data_dir=str(tmp_path / "a_file" / "data"))
    cifar_files.assert_one_line(error, str(tmp_path / "a_file" / "data"), f"{len(server.body) / 1e6:.1f} MB",
                                "--config.data_dir=DIR")
    assert not server.gets()


def _child(args, stderr_path):
    """tests/download_child.py (the prefetch command, with the test archive's md5 and size) in a process."""
    variant = cifar_archive.VARIANTS["cifar100"]
    env = {**os.environ, "PYTHONPATH": str(cifar_files.ROOT), "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, str(cifar_files.ROOT / "tests" / "download_child.py"), variant.md5,
                             str(variant.size), *args],
                            stdout=subprocess.PIPE, stderr=open(stderr_path, "w"), text=True,
                            cwd=cifar_files.ROOT, env=env)


def test_two_processes_download_once(server, body, data_dir, tmp_path):
    server.script(pause_after(len(body) // 3))  # the first transfer waits until both processes run
    # A long --timeout: on a loaded machine the second process may take a while to start.
    args = ["cifar100", "--data-dir", str(data_dir), "--url", server.url(), "--timeout", "600"]
    first = _child(args, tmp_path / "first.err")
    try:
        wait_for(server.got_request.is_set, CHILD_WAIT_S, "the first process's request")
        second = _child(args, tmp_path / "second.err")
        try:
            wait_for(lambda: "waiting for another process" in (tmp_path / "second.err").read_text(),
                     CHILD_WAIT_S, "the second process to wait on the lock")
            server.release()
            outputs = [p.communicate(timeout=CHILD_WAIT_S)[0] for p in (first, second)]
        finally:
            second.kill()
    finally:
        first.kill()
    assert (first.returncode, second.returncode) == (0, 0), [(tmp_path / f).read_text() for f in
                                                             ("first.err", "second.err")]
    assert outputs == [f"{data_dir / ARCHIVE}\n"] * 2
    assert len(server.gets()) == 1
    assert (data_dir / ARCHIVE).read_bytes() == body
    assert sorted(p.name for p in data_dir.iterdir()) == [ARCHIVE]  # the waiter left no new lock


def test_sigint_mid_download_then_a_rerun_resumes(server, body, data_dir, tmp_path, capsys):
    half = len(body) // 2
    server.script(stall_after(half))
    args = ["cifar100", "--data-dir", str(data_dir), "--url", server.url()]
    child = _child([*args, "--timeout", "600"], tmp_path / "child.err")
    try:
        part = data_dir / PART
        wait_for(lambda: part.exists() and part.stat().st_size == half, CHILD_WAIT_S, "half the file in the .part")
        child.send_signal(signal.SIGINT)
        child.communicate(timeout=CHILD_WAIT_S)
    finally:
        child.kill()
    assert child.returncode == 130, (tmp_path / "child.err").read_text()
    assert "interrupted" in (tmp_path / "child.err").read_text()
    assert part.stat().st_size == half and not (data_dir / ARCHIVE).exists()
    assert sorted(p.name for p in data_dir.iterdir()) == [PART]  # kept to resume from; no lock
    server.release()

    assert download_cli.main(args) == 0  # the rerun
    assert capsys.readouterr().out == f"{data_dir / ARCHIVE}\n"
    assert server.gets()[-1][2]["Range"] == f"bytes={half}-"
    assert (data_dir / ARCHIVE).read_bytes() == body


# The prefetch command and the places data comes from.

def test_prefetch_prints_the_verified_archive(server, data_dir, capsys):
    assert download_cli.main(["cifar100", "--url", server.url()]) == 0  # data_dir from CIFAR_JAX_DATA
    assert capsys.readouterr().out == f"{data_dir / ARCHIVE}\n"
    assert download_cli.main(["cifar100", "--data-dir", str(data_dir)]) == 0  # already there: no request
    assert capsys.readouterr().out == f"{data_dir / ARCHIVE}\n"
    assert len(server.gets()) == 1


def test_prefetch_refuses_a_damaged_archive_placed_by_hand(data_dir, capsys):
    data_dir.mkdir()
    (data_dir / ARCHIVE).write_bytes(b"damaged")
    assert download_cli.main(["cifar100"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "has md5" in err


def test_prefetch_help_and_usage_errors(capsys):
    with pytest.raises(SystemExit) as done:  # as `python -m cifar_jax.download --help` exits
        sys.exit(download_cli.main(["--help"]))
    assert done.value.code == 0
    assert "--data-dir" in capsys.readouterr().out
    for argv, fragment in ((["cifar1000"], "invalid choice"), ([], "required"),
                           (["cifar10", "--timeout", "0"], "--timeout"), (["cifar10", "--bogus"], "--bogus")):
        assert download_cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and fragment in err, err


def test_prefetch_messages_name_its_own_options(data_dir, capsys):
    assert download_cli.main(["cifar100", "--url", f"http://127.0.0.1:{_free_port()}/"]) == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("error: cannot connect to http://127.0.0.1:") and "--url URL" in last
    assert "--config." not in last
    assert download_cli.main(["cifar100", "--url", "/shared/copy.tar.gz"]) == 2
    assert "error: --url '/shared/copy.tar.gz' is not an http" in capsys.readouterr().err


def test_data_dir_and_url_defaults(tmp_path, monkeypatch):
    variant = cifar_archive.VARIANTS["cifar10"]
    monkeypatch.delenv("CIFAR_JAX_DATA")
    assert cifar_download.resolve_data_dir("") == tmp_path / "home" / ".cache" / "cifar_jax" / "datasets"
    monkeypatch.setenv("CIFAR_JAX_DATA", str(tmp_path / "env"))
    assert cifar_download.resolve_data_dir("") == tmp_path / "env"
    assert cifar_download.resolve_data_dir(str(tmp_path / "explicit")) == tmp_path / "explicit"
    assert cifar_download.resolve_url(variant, "") == variant.url
    monkeypatch.setenv("CIFAR_JAX_DATA_URL", "https://mirror.example/cifar/")
    assert cifar_download.resolve_url(variant, "") == "https://mirror.example/cifar/cifar-10-python.tar.gz"
    assert cifar_download.resolve_url(variant, "http://other/c10.tgz") == "http://other/c10.tgz"
    with pytest.raises(DataError) as error:
        cifar_download.resolve_url(variant, "/shared/cifar-10-python.tar.gz")
    cifar_files.assert_one_line(error, "--config.data_url", "not an http:// or https:// URL")


def test_an_archive_placed_by_hand_is_read_without_a_request(server, source, data_dir):
    data_dir.mkdir()
    (data_dir / ARCHIVE).write_bytes(source[0])
    _assert_read_correctly(_load(server.url()), source)
    assert not server.gets()


def test_download_timeout_must_be_positive():
    from cifar_jax.config import validate_config

    with pytest.raises(ConfigError) as error:
        validate_config(cifar_files.make_config(download_timeout=0.0))
    cifar_files.assert_one_line(error, "--config.download_timeout")


def test_train_command_downloads_then_trains(tmp_path, monkeypatch, capsys, smoke_run):
    # configs/smoke.py as it is, on a downloaded archive of the same shapes (250/125 images,
    # 10 classes): the compiled steps are the shared smoke run's (one XLA cache per test run).
    from cifar_jax import train

    rng = np.random.default_rng(1)
    path = cifar_files.write_cifar_archive(tmp_path / "source", "cifar10", cifar_files.random_cifar_split(rng, 250, 10),
                                           cifar_files.random_cifar_split(rng, 125, 10))
    variant = cifar_archive.VARIANTS["cifar10"]
    monkeypatch.setitem(cifar_archive.VARIANTS, "cifar10",
                        dataclasses.replace(variant, md5=md5_of(path), size=path.stat().st_size))
    with FileServer(path.read_bytes(), "/" + variant.archive) as server:
        code = train.main(["--config", str(cifar_files.ROOT / "configs" / "smoke.py"), "--workdir",
                           str(tmp_path / "run"), "--config.dataset=cifar10", f"--config.data_url={server.url()}"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Data: cifar10, 250 train / 125 test images" in out
    assert (tmp_path / "data" / variant.archive).is_file() and len(server.gets()) == 1
