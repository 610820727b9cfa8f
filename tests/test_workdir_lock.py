"""One training process per workdir: WORKDIR/.lock."""
import os
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
    workdir_lock.acquire(sys.argv[1])
    print("locked", flush=True)
    time.sleep(120)
""")


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))


def test_a_second_training_process_refuses_the_workdir(tmp_path, capsys, monkeypatch):
    """Another live process holds the workdir: training refuses at once, before loading data."""
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
        holder.kill()
        holder.wait()
    # The owner was killed without cleaning up: its lock is stale and is taken over.
    assert (tmp_path / ".lock").exists()
    lock = workdir_lock.acquire(tmp_path)
    assert f"pid={os.getpid()}" in lock.read_text()
    workdir_lock.release(lock)
    assert not lock.exists()


def test_lock_file_edge_cases(tmp_path):
    lock = workdir_lock.acquire(tmp_path)
    with pytest.raises(workdir_lock.WorkdirLocked, match="already in use by this process"):
        workdir_lock.acquire(tmp_path)
    workdir_lock.release(lock)
    # Garbage in the lock file (a torn write): taken over.
    (tmp_path / ".lock").write_bytes(b"\x00\xffnot a lock")
    workdir_lock.release(workdir_lock.acquire(tmp_path))
    # A reused pid (alive, but started at another time than the owner) is not the owner.
    (tmp_path / ".lock").write_text(f"pid={os.getppid()}\nstart=1\nhost={os.uname().nodename}\n")
    workdir_lock.release(workdir_lock.acquire(tmp_path))
    # Another host's lock cannot be checked from here: refused.
    (tmp_path / ".lock").write_text("pid=1\nstart=\nhost=some-other-host\n")
    with pytest.raises(workdir_lock.WorkdirLocked, match="on host some-other-host"):
        workdir_lock.acquire(tmp_path)
    # Releasing someone else's lock leaves it alone.
    workdir_lock.release(tmp_path / ".lock")
    assert (tmp_path / ".lock").exists()


def test_a_lock_that_does_not_fit_on_the_disk_is_not_left_behind(tmp_path):
    from tests.disks import fill, tiny_disk

    with tiny_disk(tmp_path / "disk", "256k") as disk:
        fill(disk)
        with pytest.raises(CifarJaxError, match=r"^cannot write the lock file .*\.lock \(No space left on device\); "
                                                r"free space on that disk or pass another --workdir$"):
            workdir_lock.acquire(disk)
        assert not (disk / ".lock").exists()
