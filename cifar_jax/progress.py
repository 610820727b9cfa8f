"""The progress of an epoch on stderr: tqdm's bar on a terminal; elsewhere (a log file, a
batch job's output) a plain line now and then, never a carriage-return update.
"""
from __future__ import annotations

import contextlib
import sys
import time

# Off a terminal: at most one line per this many seconds. An epoch shorter than that prints
# none (its summary line, on stdout, follows at once).
LINE_INTERVAL_S = 60.0


class PlainProgress:
    """tqdm's `update(n)` for streams that are not terminals: a whole line at a slow interval."""

    def __init__(self, total: int, desc: str, file, interval: float = LINE_INTERVAL_S, clock=time.monotonic):
        self.total, self.desc, self.file, self.interval, self.clock = total, desc, file, interval, clock
        self.done = 0
        self.start = self.last = clock()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        if now - self.last < self.interval or self.done >= self.total:
            return
        self.last = now
        elapsed = now - self.start
        left = elapsed * (self.total - self.done) / self.done
        print(f"{self.desc}: {self.done}/{self.total} steps ({self.done / self.total:.0%}), "
              f"{elapsed:.0f} s so far, about {left:.0f} s to go", file=self.file, flush=True)


@contextlib.contextmanager
def epoch_progress(total: int, desc: str, enabled: bool = True, file=None):
    """Yields an object with `update(steps)`: a tqdm bar when `file` (default stderr) is a
    terminal, else PlainProgress; one that shows nothing when not `enabled`."""
    file = sys.stderr if file is None else file
    if enabled and _is_terminal(file):
        from tqdm import tqdm

        with tqdm(total=total, desc=desc, leave=False, file=file) as bar:
            yield bar
    else:
        yield PlainProgress(total, desc, file, interval=LINE_INTERVAL_S if enabled else float("inf"))


def _is_terminal(file) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
