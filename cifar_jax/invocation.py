"""How the user started a command-line tool, so that its usage line, its hints and the
commands it suggests name it the same way: `cifar-jax train` or `python -m cifar_jax.train`.

Imports nothing of cifar_jax: the library modules that print hints (config, checkpoint)
and the command modules all read it.
"""
from __future__ import annotations

import contextlib
import shlex

# subcommand of `cifar-jax` -> the module that runs it, as `python -m cifar_jax.MODULE`
MODULES = {
    "train": "train",
    "evaluate": "evaluate",
    "predict": "predict",
    "report": "report",
    "models": "zoo",
    "download": "download",
}
ALIASES = {"zoo": "models"}  # the module's name, which the docs also show, is accepted too

# "cifar-jax" (or "python -m cifar_jax.cli") while the dispatcher runs a subcommand; None
# when a module runs as `python -m cifar_jax.MODULE` or is called from Python.
_dispatcher: str | None = None


def command(name: str) -> str:
    """The command that runs subcommand `name` ("train", "models", ...), spelled the way
    the running tool was started: "cifar-jax train", or "python -m cifar_jax.train"."""
    name = ALIASES.get(name, name)
    if _dispatcher:
        return f"{_dispatcher} {name}"
    return f"python -m cifar_jax.{MODULES[name]}"


def command_line(name: str, *args) -> str:
    """`command(name)` followed by `args`, each quoted for a POSIX shell where it needs it,
    so that the line runs as printed."""
    return " ".join([command(name), *(shlex.quote(str(arg)) for arg in args)])


@contextlib.contextmanager
def dispatched_by(prefix: str):
    """While the block runs, commands are named as subcommands of `prefix` ("cifar-jax")."""
    global _dispatcher
    before, _dispatcher = _dispatcher, prefix
    try:
        yield
    finally:
        _dispatcher = before
