"""`jax.jit`, with the compiler options the steps compile faster with on this backend.

XLA:CPU compiles the train and eval steps 20-35 % faster with its elemental code emitters
than with its default fusion emitters, and runs them as fast (docs/speed.md): on the CPU
backend the steps are compiled with `xla_cpu_use_fusion_emitters=False`. Other backends
get no options. A jaxlib that no longer knows the option gets none either (checked once,
on a trivial program), so a change in XLA costs compile time, not a crash.
"""
from __future__ import annotations

import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp

CPU_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


@functools.lru_cache(maxsize=None)
def backend_options(backend: str) -> Optional[dict]:
    """CPU_OPTIONS for the "cpu" backend when this jaxlib accepts them, else None."""
    if backend != "cpu":
        return None
    try:
        jax.jit(lambda x: x + 1, compiler_options=CPU_OPTIONS).lower(jax.ShapeDtypeStruct((), jnp.float32)).compile()
    except Exception:  # noqa: BLE001 (XLA's error for an unknown option is a plain runtime error)
        return None
    return dict(CPU_OPTIONS)


try:  # 0.3 us a call; JAX's private API, so a public fallback (60 us for a train state)
    from jax._src.core import trace_state_clean as _outside_any_trace
except ImportError:  # pragma: no cover (jax 0.4.35 .. 0.11 have it)
    _outside_any_trace = None


def _traced(args, kwargs) -> bool:
    if _outside_any_trace is not None:
        return not _outside_any_trace()
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((args, kwargs)))


class TunedJit:
    """`jax.jit(fun, **jit_kwargs)`, compiled with `backend_options` of the default backend
    when called (or lowered) outside any trace. Inside one (another jit, a lax.scan,
    jax.eval_shape) it is the plain jit: a jit nested in a trace may not carry compiler
    options, and the outer program's options apply to it anyway."""

    def __init__(self, fun: Callable, **jit_kwargs):
        functools.update_wrapper(self, fun)
        self._fun, self._jit_kwargs = fun, jit_kwargs
        self._plain = jax.jit(fun, **jit_kwargs)
        self._tuned: dict[str, Callable] = {}  # backend -> its jit

    def _for(self, args, kwargs) -> Callable:
        if _traced(args, kwargs):
            return self._plain
        backend = jax.default_backend()
        if backend not in self._tuned:
            options = backend_options(backend)
            self._tuned[backend] = (self._plain if options is None
                                    else jax.jit(self._fun, compiler_options=options, **self._jit_kwargs))
        return self._tuned[backend]

    def __call__(self, *args, **kwargs):
        return self._for(args, kwargs)(*args, **kwargs)

    def lower(self, *args, **kwargs):
        return self._for(args, kwargs).lower(*args, **kwargs)


def tuned_jit(fun: Optional[Callable] = None, **jit_kwargs):
    """TunedJit as a decorator, with or without `jax.jit`'s keyword arguments."""
    if fun is None:
        return lambda fun: TunedJit(fun, **jit_kwargs)
    return TunedJit(fun, **jit_kwargs)
