"""Shared test setup: CPU only, and a persistent XLA cache for this run so that identical
train steps compiled by several tests (and by CLI subprocesses) compile once per run."""
import atexit
import contextlib
import io
import os
import pathlib
import shutil
import tempfile

# Forced, not defaulted: the assertions are about CPU numbers and one CPU device, whatever
# the shell exports (JAX_PLATFORMS=cuda, or XLA_FLAGS forcing 3 host devices). Tests that
# need N devices start a subprocess with their own XLA_FLAGS.
os.environ["JAX_PLATFORMS"] = "cpu"
_flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
if _flags:
    os.environ["XLA_FLAGS"] = " ".join(_flags)
else:
    os.environ.pop("XLA_FLAGS", None)
# One process: `train.main` starts jax.distributed when JAX_NUM_PROCESSES > 1 is set
# (cifar_jax.hosts); test_multi_process.py sets these for its own subprocesses.
for _name in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "JAX_COORDINATOR_ADDRESS"):
    os.environ.pop(_name, None)
# Nothing a test runs writes into the user's home: image_folder's default cache
# (cifar_jax.data.image_folder: $XDG_CACHE_HOME/cifar_jax) goes to a folder of this session,
# matplotlib's font cache in the system temp folder (kept between runs: building it takes seconds).
# Subprocesses inherit both.
_SESSION = pathlib.Path(tempfile.mkdtemp(prefix="cifar_jax_tests_"))
atexit.register(shutil.rmtree, _SESSION, ignore_errors=True)
os.environ["XDG_CACHE_HOME"] = str(_SESSION / "cache")
os.environ.setdefault("MPLCONFIGDIR", str(pathlib.Path(tempfile.gettempdir()) / "cifar_jax_test_matplotlib"))
# One persistent compilation cache per test run, new and empty (unless the shell exports
# JAX_COMPILATION_CACHE_DIR): a program is compiled once per run and reused by every test
# that builds it again, in this process and in the CLI subprocesses (which inherit it), but a
# second run starts cold, as a newcomer's first run and CI's do (docs/testing.md).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_SESSION / "xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402  (after the environment above)
import pytest  # noqa: E402

try:  # now, not lazily: hypothesis's pytest plugin imports it in the terminal summary, where
    import hypothesis  # noqa: E402,F401  (Python 3.11.7's parser can fail: "AST constructor
except ImportError:  # recursion depth mismatch" after Orbax/TensorStore ran in the process)
    pass
else:  # its caches in a temporary folder, not .hypothesis/ in whatever directory pytest runs from
    from hypothesis.configuration import set_hypothesis_home_dir  # noqa: E402

    set_hypothesis_home_dir(str(pathlib.Path(tempfile.gettempdir()) / "cifar_jax_test_hypothesis"))

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def smoke_config():
    """configs/smoke.py as a fresh ConfigDict (tests may change it freely)."""
    from cifar_jax.config import load_config_file

    return load_config_file(str(REPO / "configs" / "smoke.py"))


class TrainStepsSpy:
    """multistep.train_steps, recording each call's (steps, batch) shape and metrics."""

    def __init__(self, real):
        self.real, self.calls = real, []

    def __call__(self, state, images, labels, order, mask, *args, **kwargs):
        state, metrics = self.real(state, images, labels, order, mask, *args, **kwargs)
        self.calls.append({"shape": tuple(order.shape), "metrics": jax.device_get(metrics)})
        return state, metrics


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """One uninterrupted run of configs/smoke.py through train_and_evaluate (3 epochs of 8
    steps over 250 images, the last batch of each 26 real and 6 padding; checkpoints at steps
    8, 16, 24), shared by every test that needs a finished run: `config`, `workdir`, the final
    `state` (on the host), `calls` (the train_steps calls' shapes and metrics) and `out` (what
    it printed). Tests must not change it: copy the workdir (`shutil.copytree`) to resume,
    damage or extend it. Its compiled steps are the ones every smoke run of the suite,
    in-process or CLI subprocess, reuses (one XLA cache per run).

    Trained once per test run: the first pytest-xdist worker to need it trains it, under a
    lock, into a folder all workers see; the others restore its final checkpoint."""
    import fcntl
    import pickle
    import types

    from cifar_jax import checkpoint, multistep
    from cifar_jax.config import load_config_file
    from cifar_jax.train import train_and_evaluate

    config = load_config_file(str(REPO / "configs" / "smoke.py"))
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")  # set by pytest-xdist for this run's workers
    base = tmp_path_factory.getbasetemp()
    shared = base.parent / f"smoke_run-{run_id}" if run_id else base / "smoke_run"
    shared.mkdir(exist_ok=True)
    workdir, extra = shared / "run", shared / "calls_and_output.pickle"
    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if extra.exists():  # another worker trained it
            state = jax.device_get(checkpoint.restore(workdir)[0])
            calls, out = pickle.loads(extra.read_bytes())
        else:
            spy, printed = TrainStepsSpy(multistep.train_steps), io.StringIO()
            with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
                patch.setattr(multistep, "train_steps", spy)
                state = jax.device_get(train_and_evaluate(config, str(workdir)))
            calls, out = spy.calls, printed.getvalue()
            extra.write_bytes(pickle.dumps((calls, out)))
    return types.SimpleNamespace(config=config, workdir=workdir, state=state, calls=calls, out=out)
