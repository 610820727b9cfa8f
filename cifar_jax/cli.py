"""`cifar-jax COMMAND [ARGS...]`: one console script for the command-line tools.

Each subcommand takes the same arguments as its `python -m cifar_jax.MODULE` (which
stay); its module is imported only when it runs, so `cifar-jax download ...` and
`cifar-jax report ...` start without importing JAX. While a subcommand runs, its usage
line and the commands it suggests name it as `cifar-jax COMMAND` (cifar_jax.invocation).
"""
from __future__ import annotations

import difflib
import importlib
import sys

from cifar_jax.invocation import ALIASES, MODULES, dispatched_by

# subcommand -> one line of help
COMMANDS = {
    "train": "train a model (or resume), evaluating after every epoch; --dry-run checks a run",
    "evaluate": "evaluate a checkpoint of a run on its test set",
    "predict": "top-5 classes of image files, with a run's checkpoint",
    "report": "write WORKDIR/curves.png from metrics.jsonl",
    "models": "list the models --config.model can train (--list: sizes, GFLOPs); also `zoo`",
    "download": "fetch and verify a CIFAR archive ahead of training",
}
assert set(COMMANDS) == set(MODULES)


def usage(prog: str = "cifar-jax") -> str:
    lines = [f"usage: {prog} COMMAND [ARGS...]   ({prog} COMMAND --help: its arguments)", "", "commands:"]
    lines += [f"  {name:<9} {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def _unknown(name: str, prog: str) -> str:
    close = difflib.get_close_matches(name, [*COMMANDS, *ALIASES], n=2, cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return f"error: unknown command {name!r}; {hint}commands: {', '.join(COMMANDS)} ({prog} --help)"


def main(argv: list[str] | None = None, prog: str = "cifar-jax") -> int:
    """Runs one subcommand; 2 (and a message on stderr) for a missing or unknown one.
    `prog` is how the user started this dispatcher, for the usage lines and hints."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args:
        print(usage(prog), file=sys.stderr)
        return 2
    if args[0] in ("-h", "--help"):
        print(usage(prog))
        return 0
    name = ALIASES.get(args[0], args[0])
    if name not in COMMANDS:
        print(_unknown(args[0], prog), file=sys.stderr)
        return 2
    module = importlib.import_module(f"cifar_jax.{MODULES[name]}")
    with dispatched_by(prog):
        try:
            return module.main(args[1:])
        except SystemExit as done:  # argparse's --help (and its usage errors) exit
            return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)


if __name__ == "__main__":
    sys.exit(main(prog="python -m cifar_jax.cli"))
