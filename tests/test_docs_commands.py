"""Every command README.md and the pages of docs/ show runs as far as it can without training
or downloading, in this process: `train` with --dry-run, the other commands (and a command
named without arguments) with --help. A command shown as `$ COMMAND` with its output must
print that output (each shown line that holds no "..."), and exit 2 when the output is an
error."""
import importlib
import re
import shlex

import pytest

from cifar_jax import cli
from tests.conftest import REPO

PAGES = ("README.md", *sorted(f"docs/{p.name}" for p in (REPO / "docs").glob("*.md")))
PROGRAMS = ("cifar-jax", "python -m cifar_jax.")
# A placeholder (COMMAND, NAME|FILE, [ARGS...], PATH/..., train/evaluate/...) marks a pattern, not
# a command to run.
_PLACEHOLDER = re.compile(r"\.\.\.|\||\[|\b[A-Z]{3,}\b|^cifar-jax \w+/")


def _shown(page: str) -> list[tuple[str, list[str]]]:
    """(command, the output lines shown after it) of each command on the page: the lines of
    its code blocks that start with a program (after an optional `$ `), and its inline code
    spans that are whole commands."""
    text = (REPO / page).read_text()
    commands = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        lines = re.sub(r"\\\n\s*", " ", block).splitlines()  # join continued lines
        for i, line in enumerate(lines):
            line = line.strip()
            prompt = line.startswith("$ ")
            line = line.removeprefix("$ ").split("  #")[0].strip()
            if not line.startswith(PROGRAMS) or _PLACEHOLDER.search(line):
                continue
            output = []
            if prompt:  # its output: the lines up to the next command
                for after in lines[i + 1:]:
                    if after.startswith("$ "):
                        break
                    output.append(after)
            commands.append((line, output))
    for span in re.findall(r"`([^`\n]+)`", text):
        if span.startswith(PROGRAMS) and not _PLACEHOLDER.search(span):
            commands.append((span, []))
    return commands


def _run(command: str) -> int:
    """Runs `command` in this process as far as it goes without training or downloading."""
    argv = shlex.split(command)
    if argv[0] == "cifar-jax" or argv[2] == "cifar_jax.cli":  # the dispatcher: COMMAND ARGS
        head = argv[1:2] if argv[0] == "cifar-jax" else argv[3:4]
        rest = argv[2:] if argv[0] == "cifar-jax" else argv[4:]
        name, run = (head[0] if head else None), cli.main
    else:  # python -m cifar_jax.MODULE ARGS
        head, rest = [], argv[3:]
        name, run = argv[2].removeprefix("cifar_jax."), importlib.import_module(argv[2]).main
    if name == "train" and rest and not {"--help", "-h", "--list-configs"} & set(rest):
        rest = [*rest, "--dry-run"]  # a whole training command (a bare name gets --help)
    elif "--help" not in rest:
        rest = [*rest, "--help"]
    try:
        return run([*head, *rest])
    except SystemExit as done:  # argparse's --help in a module run directly
        return done.code or 0


def _all_shown():
    seen, params = set(), []
    for page in PAGES:
        for command, output in _shown(page):
            if (command, tuple(output)) not in seen:
                seen.add((command, tuple(output)))
                params.append(pytest.param(command, output, id=f"{page}: {command}"))
    return params


@pytest.mark.parametrize("command, output", _all_shown())
def test_a_command_the_docs_show_runs_as_shown(command, output, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # runs/... are new folders here
    monkeypatch.setenv("CIFAR_JAX_DATA", str(tmp_path / "data"))  # not the user's downloads
    code = _run(command)
    captured = capsys.readouterr()
    expected_error = any(line.startswith("error:") for line in output)
    assert code == (2 if expected_error else 0), captured.err[-2000:]
    printed = (captured.out + captured.err).splitlines()
    for line in output:
        if line.strip() and "..." not in line:
            assert line in printed, line
    assert not list(tmp_path.glob("runs")) or not any((tmp_path / "runs").iterdir())


def test_the_pages_show_the_commands_this_test_runs():
    """The extraction finds the commands (so the test above cannot pass by finding none)."""
    readme = [command for command, _ in _shown("README.md")]
    cli_page = dict(_shown("docs/cli.md"))
    assert "cifar-jax train --config default --workdir runs/seed" in readme
    assert "cifar-jax train --config smoke --workdir runs/smoke" in readme
    assert cli_page["cifar-jax train --config default --workdir runs/seed --dry-run"][0].startswith("Dry run:")
    assert cli_page["cifar-jax evalute --workdir runs/seed"][0].startswith("error: unknown command")
    assert "cifar-jax models --list" in cli_page and "cifar-jax train --list-configs" in cli_page
    assert len(cli_page) >= 15
