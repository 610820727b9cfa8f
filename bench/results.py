"""Benchmark results as small JSON files: `bench/results/NAME-YYYY-MM-DD-DEVICE.json`.

    from bench.results import write_result   # or, from a bench script: from results import ...
    path = write_result("throughput", {"rows": rows})

Each file holds `device` ({"kind", "platform", "count"} of jax.devices()), `date` (UTC ISO
date), `time_utc`, `command` (the interpreter's name and sys.argv, shell-quoted), `versions` (jax, jaxlib, flax,
optax, orbax-checkpoint, numpy, torch, torchvision and any jax CUDA plugin, read with
importlib.metadata without importing them; null when not installed), `git` (the commit,
"+dirty" when the tree has changes; null without git) and the figures, merged at the top
level. DEVICE is a slug of the device kind: "NVIDIA H200" -> "nvidia-h200", "cpu".

Never overwrites: when the file exists (a rerun the same day), it writes
NAME-YYYY-MM-DD-DEVICE-2.json, -3, ... instead, so a measurement is never lost or clobbered.
Only the standard library is imported at module level; jax is imported when a file is
written (to name the device), and nothing is compiled.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import pathlib
import re
import shlex
import subprocess
import sys
from typing import Optional

RESULTS_DIR = pathlib.Path(__file__).resolve().parent / "results"
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "torch", "torchvision")
RESERVED = ("device", "date", "time_utc", "command", "versions", "git")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def slug(text: str) -> str:
    """'NVIDIA H200' -> 'nvidia-h200': lower case, runs of other characters -> one '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def versions() -> dict:
    """Installed versions of PACKAGES and of any jax CUDA plugin (None: not installed)."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name.startswith(("jax-cuda", "jax-rocm")) and name not in found:
            found[name] = dist.version
    return found


def device_info() -> dict:
    import jax

    devices = jax.devices()
    return {"kind": devices[0].device_kind, "platform": devices[0].platform, "count": len(devices)}


def git_commit() -> Optional[str]:
    """HEAD of the checkout this file is in, "+dirty" with uncommitted changes; None without git."""
    here = RESULTS_DIR.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if head.returncode:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _plain(value):
    """json.dumps' fallback: numpy scalars and arrays, paths."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, pathlib.PurePath):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_result(name: str, figures: dict, *, out_dir=RESULTS_DIR, device: Optional[dict] = None,
                 command: Optional[str] = None) -> pathlib.Path:
    """Writes `out_dir/NAME-YYYY-MM-DD-DEVICE.json` (or ...-2.json, -3, ... if taken) and
    returns its path. `device` and `command` default to jax.devices()[0] and the interpreter's
    name + sys.argv (e.g. "python3 bench/throughput.py --json throughput")."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"result name {name!r}: use letters, digits, '_', '.', '-'")
    clash = sorted(set(figures) & set(RESERVED))
    if clash:
        raise ValueError(f"figures may not use the reserved keys {clash}")
    now = datetime.datetime.now(datetime.timezone.utc)
    device = device if device is not None else device_info()
    record = {
        "device": device,
        "date": now.date().isoformat(),
        "time_utc": now.isoformat(timespec="seconds"),
        "command": command if command is not None else shlex.join([pathlib.Path(sys.executable).name, *sys.argv]),
        "versions": versions(),
        "git": git_commit(),
        **figures,
    }
    text = json.dumps(record, indent=2, default=_plain) + "\n"
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-{record['date']}-{slug(device['kind'])}"
    for n in range(1, 1000):
        path = out / (f"{stem}.json" if n == 1 else f"{stem}-{n}.json")
        try:
            with open(path, "x") as f:  # "x": never overwrite, even racing another writer
                f.write(text)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{out}/{stem}*.json: 999 files already")


def add_arguments(parser) -> None:
    """--json NAME and --out-dir DIR, as every bench script takes them."""
    parser.add_argument("--json", default="", metavar="NAME",
                        help="also write the figures to OUT_DIR/NAME-YYYY-MM-DD-DEVICE.json (bench/results.py)")
    parser.add_argument("--out-dir", default=str(RESULTS_DIR), help="folder of the --json file (default: bench/results)")


def report(path: pathlib.Path) -> None:
    print(f"wrote {path}", flush=True)
