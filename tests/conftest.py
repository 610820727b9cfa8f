"""Shared test setup: CPU only, and a persistent XLA cache so that identical train
steps compiled by several tests (and by CLI subprocesses) compile once per session."""
import os
import pathlib
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_CACHE = pathlib.Path(tempfile.gettempdir()) / "cifar_jax_test_xla_cache"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402  (after the environment above)
import pytest  # noqa: E402

try:  # now, not lazily: hypothesis's pytest plugin imports it in the terminal summary, where
    import hypothesis  # noqa: E402,F401  (Python 3.11.7's parser can fail: "AST constructor
except ImportError:  # recursion depth mismatch" after Orbax/TensorStore ran in the process)
    pass

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def smoke_config():
    """configs/smoke.py as a fresh ConfigDict (tests may change it freely)."""
    from cifar_jax.config import load_config_file

    return load_config_file(str(REPO / "configs" / "smoke.py"))
