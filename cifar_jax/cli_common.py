"""What the command-line tools (evaluate, predict, report) share."""
from __future__ import annotations

import argparse

from cifar_jax.errors import CifarJaxError


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage mistake raises CifarJaxError with one line (message and
    usage), which the commands print as `error: ...` and exit 2 on, like train."""

    def error(self, message):
        usage = " ".join(self.format_usage().split()).removeprefix("usage: ")
        raise CifarJaxError(f"{message}; usage: {usage}")


def quiet_orbax() -> None:
    """Silences the INFO/WARNING lines Orbax logs through absl (e.g. 'directory is read only')."""
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass
