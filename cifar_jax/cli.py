"""`cifar-jax COMMAND [ARGS...]`: one console script for the command-line tools.

Each subcommand takes the same arguments as its `python -m cifar_jax.MODULE` (which
stay); its module is imported only when it runs, so `cifar-jax download ...` and
`cifar-jax report ...` start without importing JAX.
"""
from __future__ import annotations

import importlib
import sys

# subcommand -> (module, one line of help)
COMMANDS = {
    "train": ("cifar_jax.train", "train a model (or resume), evaluating after every epoch; --dry-run checks a run"),
    "evaluate": ("cifar_jax.evaluate", "evaluate a checkpoint of a run on its test set"),
    "predict": ("cifar_jax.predict", "top-5 classes of image files, with a run's checkpoint"),
    "report": ("cifar_jax.report", "write WORKDIR/curves.png from metrics.jsonl"),
    "models": ("cifar_jax.zoo", "list the models --config.model can train (--list: sizes, GFLOPs)"),
    "download": ("cifar_jax.download", "fetch and verify a CIFAR archive ahead of training"),
}


def usage() -> str:
    lines = ["usage: cifar-jax COMMAND [ARGS...]   (cifar-jax COMMAND --help: its arguments)", "", "commands:"]
    lines += [f"  {name:<9} {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Runs one subcommand; 2 (and a message on stderr) for a missing or unknown one."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args:
        print(usage(), file=sys.stderr)
        return 2
    if args[0] in ("-h", "--help"):
        print(usage())
        return 0
    if args[0] not in COMMANDS:
        print(f"error: unknown command {args[0]!r}; commands: {', '.join(COMMANDS)} (cifar-jax --help)",
              file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[args[0]][0])
    try:
        return module.main(args[1:])
    except SystemExit as done:  # argparse's --help (and its usage errors) exit
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)


if __name__ == "__main__":
    sys.exit(main())
