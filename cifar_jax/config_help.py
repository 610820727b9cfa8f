"""`python -m cifar_jax.train --help`: every config key, its default and its comment.

The comments are read from the config file's source (`tokenize` and `ast`, nothing is
run twice): the comment on an assignment's own line, or else the comment lines directly
above it. configs/default.py documents every key; a config file that only changes some
keys (configs/smoke.py) keeps default.py's comments for the others.
"""
from __future__ import annotations

import ast
import io
import pathlib
import re
import shutil
import textwrap
import tokenize

from cifar_jax import named_configs
from cifar_jax.config import USAGE, load_config_file, locate_config
from cifar_jax.errors import ConfigError
from cifar_jax.invocation import command

# The named config `default` (the repository's configs/default.py, installed with the package).
DEFAULT_CONFIG = named_configs.find("default")
# A block's first line that only names a section ("Training.", "Data (docs/data.md).").
_SECTION_TITLE = re.compile(r"^[A-Z][\w-]*( [\w-]+){0,2}( \([^)]*\))?\.$")


def _file_of(path: str) -> pathlib.Path:
    """The file of a --config value (FILE, NAME, FILE:ARG or NAME:ARG)."""
    return locate_config(path)[0]


def summary_line(path) -> str:
    """The first sentence of a config file's docstring, read without running the file."""
    try:
        doc = ast.get_docstring(ast.parse(pathlib.Path(path).read_text())) or ""
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        doc = ""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    first = re.split(r"(?<=\.)\s+(?=[A-Z])", paragraph, maxsplit=1)[0]
    # "..., with the changes below." speaks of the file's body: the list shows no body.
    return re.sub(r", with the changes below\.$", ".", first)


def list_configs() -> str:
    """The text of `train --list-configs`: each named config and its docstring's first line."""
    names = named_configs.names()
    if not names:
        raise ConfigError(f"no named configs are installed (the package {named_configs.PACKAGE} is missing); "
                          "reinstall cifar-jax, or pass --config FILE")
    width = min(max(shutil.get_terminal_size((100, 24)).columns, 60), 120)
    wrap = textwrap.TextWrapper(width=width, initial_indent=" " * 4, subsequent_indent=" " * 4)
    lines = [f"named configs (--config NAME, or NAME:ARG; from {named_configs.configs_dir()}):"]
    for name in names:
        lines.append(f"  {name}")
        lines.extend(wrap.wrap(summary_line(named_configs.path(name))))
    return "\n".join(lines)


def config_comments(path) -> dict[str, str]:
    """{key: comment} for every `config.KEY = ...` (or `config.a.b = ...`) assignment in the
    Python file `path` that has a comment; keys without one are left out. Unreadable or
    unparsable files give {}."""
    try:
        source = pathlib.Path(path).read_text()
        tree = ast.parse(source)
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError, tokenize.TokenError):
        return {}
    lines = source.splitlines()
    trailing, whole_line = {}, {}  # line number -> comment text
    for token in tokens:
        if token.type == tokenize.COMMENT:
            text = token.string.lstrip("#").strip()
            row = token.start[0]
            (whole_line if not lines[row - 1][: token.start[1]].strip() else trailing)[row] = text
    comments = {}
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Assign, ast.AnnAssign)):
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for target in targets:
            key = _key_of(target)
            if key is None:
                continue
            inline = [trailing[row] for row in range(node.lineno, node.end_lineno + 1) if row in trailing]
            above, row = [], node.lineno - 1
            while row in whole_line:
                above.insert(0, whole_line[row])
                row -= 1
            starts_section = row < 1 or not lines[row - 1].strip() or lines[row - 1].rstrip().endswith(":")
            if starts_section and above and (inline or _SECTION_TITLE.match(above[0])):
                # The block opens a section: a title, or an introduction to the keys below.
                above = [] if inline else above[1:]
            text = " ".join(above + inline).strip()
            if text:
                comments[key] = text
    return comments


def _key_of(target) -> str | None:
    """"a.b" for the target `config.a.b` (any root name), else None."""
    parts = []
    while isinstance(target, ast.Attribute):
        parts.insert(0, target.attr)
        target = target.value
    return ".".join(parts) if isinstance(target, ast.Name) and parts else None


def _assignment_order(path) -> dict[str, int]:
    """{key: position} of the first assignment of each key in the file `path`."""
    try:
        tree = ast.parse(pathlib.Path(path).read_text())
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return {}
    order = {}
    for node in ast.walk(tree):
        for target in getattr(node, "targets", [getattr(node, "target", None)]):
            key = _key_of(target)
            if key is not None:
                order.setdefault(key, (node.lineno, node.col_offset))
    return {key: rank for rank, key in enumerate(sorted(order, key=order.get))}


def shown(value) -> str:
    """A config value as --config.KEY=VALUE takes it ('' for an empty string)."""
    if isinstance(value, str):
        return value if value and value.strip() == value else repr(value)
    if isinstance(value, tuple):
        return "(" + ", ".join(map(str, value)) + ("," if len(value) == 1 else "") + ")"
    return str(value)


def _flat(config, prefix=""):
    for key, value in config.items():
        if hasattr(value, "items"):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield prefix + key, value


def ordered_items(config) -> list[tuple[str, object]]:
    """(key, value) of every config key, dotted if nested, in configs/default.py's order
    (keys it lacks last, sorted)."""
    order = _assignment_order(DEFAULT_CONFIG) if DEFAULT_CONFIG else {}
    return sorted(_flat(config), key=lambda item: order.get(item[0], len(order)))


def train_help(config_path: str = "") -> str:
    """The text of `train --help`; with `config_path` (a --config value: FILE, NAME,
    FILE:ARG or NAME:ARG), that config's keys and values, else the named config default's."""
    width = min(max(shutil.get_terminal_size((100, 24)).columns, 60), 100)
    lines = [
        f"usage: {command('train')} {USAGE}",
        "",
        "Trains a model as the config file says, evaluating on the test set after every epoch;",
        "a workdir that holds checkpoints of the same config resumes from its newest one.",
        "",
        "options:",
        "  --config NAME|FILE   a named config (default, smoke, transfer/seed_resnet50, ...:",
        "                       --list-configs) or a .py file with get_config(); NAME:ARG or",
        "                       FILE:ARG calls get_config(ARG), e.g. default:resnet18; a run's",
        "                       config.json resumes or extends that run",
        "  --workdir DIR        the run's folder: config.json, metrics.jsonl, checkpoints/,",
        "                       tensorboard/, curves.png",
        "  --config.KEY=VALUE   override one config key (typed like its default); repeatable",
        "  --dry-run            print the resolved config, model size, data, steps per epoch,",
        "                       devices and what happens to the workdir; train nothing",
        "  --list-configs       list the named configs, each with its first docstring line",
        "  -h, --help           this help",
        "",
    ]
    file = _file_of(config_path) if config_path else DEFAULT_CONFIG
    if not config_path and not DEFAULT_CONFIG:
        lines.append("config keys: pass --config FILE --help to list a config file's keys and defaults")
        return "\n".join(lines)
    config = load_config_file(config_path or str(DEFAULT_CONFIG))
    comments = config_comments(DEFAULT_CONFIG) if DEFAULT_CONFIG else {}
    comments.update(config_comments(file))
    lines.append(f"config keys (--config.KEY=VALUE) and their values in {config_path or 'default'}:")
    wrap = textwrap.TextWrapper(width=width, initial_indent=" " * 6, subsequent_indent=" " * 6)
    for key, value in ordered_items(config):
        lines.append(f"  {key}={shown(value)}")
        if key in comments:
            lines.extend(wrap.wrap(comments[key]))
    return "\n".join(lines)
