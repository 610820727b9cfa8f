"""cifar_jax.compiled: the steps' compiler options per backend, and jit that applies them."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar_jax import compiled
from cifar_jax.steps import train_step


def test_cpu_gets_its_options_other_backends_none():
    assert compiled.backend_options("cpu") == compiled.CPU_OPTIONS
    assert compiled.backend_options("gpu") is None and compiled.backend_options("tpu") is None


def test_an_option_this_jaxlib_does_not_know_gives_none(monkeypatch):
    compiled.backend_options.cache_clear()
    monkeypatch.setattr(compiled, "CPU_OPTIONS", {"xla_cpu_no_such_option_anywhere": True})
    try:
        assert compiled.backend_options("cpu") is None
        # ... and the steps compile without options instead of failing.
        f = compiled.TunedJit(lambda x: x * 2)
        assert float(f(jnp.float32(3))) == 6.0
    finally:
        compiled.backend_options.cache_clear()


def test_tuned_jit_at_top_level_inside_a_jit_and_traced_for_shapes():
    @compiled.tuned_jit(static_argnames="k")
    def f(x, k=1):
        return jnp.sin(x) * k

    x = jnp.linspace(0, 1, 5, dtype=jnp.float32)
    # At the top level, the jit that carries this backend's options; inside a trace, the
    # plain one (a nested jit may not carry compiler options: this would raise).
    assert f._for((x,), {"k": 2}) is not f._plain
    top = f(x, k=2)
    nested = jax.jit(lambda x: f(x, k=2) + 0)(x)
    np.testing.assert_allclose(top, nested, rtol=1e-6)
    assert jax.eval_shape(f, x).shape == (5,) and f.__name__ == "f"
    assert f.lower(x, k=2).compile()(x) is not None


def test_the_steps_are_tuned_jits():
    assert isinstance(train_step, compiled.TunedJit) and train_step.__wrapped__.__name__ == "train_step"
    with pytest.raises(TypeError):
        train_step()  # the jitted function's own signature
