"""One training process per workdir: WORKDIR/.lock."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from cifar_jax import train, workdir_lock
from cifar_jax.errors import CifarJaxError
from tests.conftest import REPO

_HOLDER = textwrap.dedent("""
    import sys, time
    from cifar_jax import workdir_lock
    lock = workdir_lock.acquire(sys.argv[1])
    print("locked", flush=True)
    time.sleep(120)
""")


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))


def test_a_second_training_process_refuses_the_workdir(tmp_path, capsys, monkeypatch):
    """Another live process holds the lock: training refuses at once, before loading data;
    once that process is killed (SIGKILL, no cleanup) the kernel has freed the lock."""
    def load_dataset(config):
        raise AssertionError("the data was loaded before the lock was taken")

    monkeypatch.setattr(train, "load_dataset", load_dataset)
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], cwd=REPO, env=_env(),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        argv = ["--config", str(REPO / "configs" / "smoke.py"), "--workdir", str(tmp_path)]
        assert train.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"error: workdir {tmp_path} is in use by training process {holder.pid} "
                       f"({tmp_path / '.lock'}); wait for it to finish or stop it, or pass another --workdir")
        assert not (tmp_path / "config.json").exists()  # nothing of the owner's run touched
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The killed holder's file is still there, naming it, but nobody holds the lock.
    assert f"pid={holder.pid}" in (tmp_path / ".lock").read_text()
    lock = workdir_lock.acquire(tmp_path)
    assert f"pid={os.getpid()}" in lock.path.read_text()
    workdir_lock.release(lock)
    assert not lock.path.exists()


def test_lock_file_edge_cases(tmp_path):
    lock = workdir_lock.acquire(tmp_path)
    with pytest.raises(workdir_lock.WorkdirLocked, match="already in use by this process"):
        workdir_lock.acquire(tmp_path)
    workdir_lock.release(lock)
    # The file's text only names the holder: a lock file that nobody holds is free,
    # whatever it says (garbage from a torn write, a live pid, another host).
    for text in (b"\x00\xffnot a lock", f"pid={os.getpid()}\nhost=some-other-host\n".encode()):
        (tmp_path / ".lock").write_bytes(text)
        workdir_lock.release(workdir_lock.acquire(tmp_path))
    # A holder whose pid is not written yet (or is unreadable) is still refused.
    lock = workdir_lock.acquire(tmp_path)
    os.ftruncate(lock.fd, 0)
    with pytest.raises(workdir_lock.WorkdirLocked, match=r"in use by another training process \("):
        workdir_lock.acquire(tmp_path)
    os.pwrite(lock.fd, b"pid=4242\nhost=some-other-host\n", 0)  # a holder on another NFS client
    with pytest.raises(workdir_lock.WorkdirLocked, match=r"in use by training process 4242 on host some-other-host"):
        workdir_lock.acquire(tmp_path)
    workdir_lock.release(lock)
    assert not (tmp_path / ".lock").exists()


def test_a_lock_that_does_not_fit_on_the_disk_is_not_left_behind(tmp_path):
    from tests.disks import fill, tiny_disk

    with tiny_disk(tmp_path / "disk", "256k") as disk:
        fill(disk)
        with pytest.raises(CifarJaxError, match=r"^cannot write the lock file .*\.lock \(No space left on device\); "
                                                r"free space on that disk or pass another --workdir$"):
            workdir_lock.acquire(disk)
        assert not (disk / ".lock").exists()
