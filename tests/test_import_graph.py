"""The package's import graph: no cycles (lazy imports inside functions included) and no
module reaching into another's private (underscore) names."""
import ast
import pathlib

from tests.conftest import REPO

PACKAGE = REPO / "cifar_jax"


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str) -> str | None:
    """The cifar_jax module that `name` (a module or a name inside one) stands for."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str):
    """(imported module, names taken from it, line) for every cifar_jax import in `module`."""
    tree = ast.parse(MODULES[module].read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "cifar_jax":
                    yield _resolve(alias.name), [], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "cifar_jax":
                continue
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if submodule in MODULES:  # `from cifar_jax import models`: the module itself
                    yield submodule, [], node.lineno
                else:
                    yield _resolve(node.module), [alias.name], node.lineno


def _graph() -> dict[str, set[str]]:
    return {m: {target for target, _, _ in _imports(m) if target and target != m} for m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_package_has_modules_to_check():
    assert {"cifar_jax.train", "cifar_jax.steps", "cifar_jax.data.dataset", "cifar_jax.checkpoint.manager"} <= set(MODULES)


def test_no_import_cycles():
    graph = _graph()
    # A package's __init__ imports its submodules; a submodule importing names from its
    # own package's __init__ would close a cycle, and is reported like any other.
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_another_modules_private_names():
    offenders = []
    for module in MODULES:
        for target, names, line in _imports(module):
            if target == module:
                continue
            offenders += [f"{module}:{line} imports {target}.{name}" for name in names
                          if name.startswith("_") and not name.startswith("__")]
    assert offenders == []


def test_no_module_reads_another_modules_private_attributes():
    offenders = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        aliases = {}  # local name -> cifar_jax module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cifar_jax"):
                for alias in node.names:
                    if f"{node.module}.{alias.name}" in MODULES:
                        aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname and alias.name in MODULES:
                        aliases[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and aliases[node.value.id] != module
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                offenders.append(f"{module}:{node.lineno} reads {aliases[node.value.id]}.{node.attr}")
    assert offenders == []


def test_the_package_and_the_prefetch_and_report_commands_start_without_jax():
    """`import cifar_jax`, `python -m cifar_jax.download` and `python -m cifar_jax.report`
    import JAX only when a name that needs it is used (a prefetch on a login node, `--help`:
    about 1 s instead of 10)."""
    import subprocess
    import sys

    code = ("import sys, cifar_jax, cifar_jax.download, cifar_jax.report, cifar_jax.cli; "
            "assert 'jax' not in sys.modules, 'jax imported'; "
            "cifar_jax.train_step; assert 'jax' in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
