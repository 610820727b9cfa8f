"""The config files that come with the package, by name: `default`, `smoke`,
`transfer/seed_resnet50`, ... (the repository's `configs/`, installed as the package
`cifar_jax.configs`, so that a name works from any folder and after any install).

Imports nothing that runs a config: listing the names reads file names only.
"""
from __future__ import annotations

import importlib.util
import pathlib
import re

PACKAGE = "cifar_jax.configs"
# Path-like names only: no absolute paths, no "..", nothing a shell would need quoted.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*(/[A-Za-z0-9_][A-Za-z0-9_-]*)*")


def configs_dir() -> pathlib.Path | None:
    """The folder of the named configs: the installed package `cifar_jax.configs` (an
    editable install maps it to the repository's configs/), else, in a source checkout
    on PYTHONPATH, the configs/ beside the package; None if neither exists."""
    try:
        spec = importlib.util.find_spec(PACKAGE)  # imports cifar_jax, not the configs
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return pathlib.Path(list(spec.submodule_search_locations)[0])
    checkout = pathlib.Path(__file__).resolve().parents[1] / "configs"
    return checkout if checkout.is_dir() else None


def names() -> list[str]:
    """Every named config: the top-level ones, then those in subfolders, each sorted."""
    folder = configs_dir()
    if folder is None:
        return []
    found = [p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.py")
             if p.name != "__init__.py" and not p.is_symlink()]
    found = [name for name in found if _NAME.fullmatch(name)]
    return sorted(found, key=lambda name: (name.count("/"), name))


def find(name: str) -> pathlib.Path | None:
    """The file of the named config `name` ("default", "transfer/finetune", with or
    without ".py"), or None if there is no such name."""
    folder = configs_dir()
    name = name.removesuffix(".py")
    if folder is None or not _NAME.fullmatch(name):
        return None
    file = folder / f"{name}.py"
    return file if file.is_file() and not file.is_symlink() and name != "__init__" else None


def path(name: str) -> pathlib.Path:
    """The file of a named config that must exist (e.g. "default")."""
    file = find(name)
    if file is None:
        raise FileNotFoundError(f"the named config {name!r} is not installed ({PACKAGE})")
    return file


def suggestion(text: str) -> str | None:
    """The named config a --config value that is no file probably meant: "configs/default.py"
    typed outside the repository means "default"."""
    stripped = text.strip().removesuffix(".py")
    for prefix in ("./configs/", "configs/"):
        stripped = stripped.removeprefix(prefix)
    if find(stripped):
        return stripped
    import difflib

    close = difflib.get_close_matches(stripped, names(), n=1, cutoff=0.75)
    return close[0] if close else None
