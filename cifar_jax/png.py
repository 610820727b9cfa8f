"""matplotlib figures, drawn without a display and written as PNG files that are whole or
absent: the one place the report modules (curves, confusion) get matplotlib from.

matplotlib is imported when a figure is made, not with this module; only its Agg renderer
is used (Figure.savefig, no pyplot).
"""
from __future__ import annotations

import os
import pathlib

from cifar_jax.errors import CifarJaxError
from cifar_jax.run_files import write_error


def new_figure(**kwargs):
    """A matplotlib Figure (CifarJaxError with the install command if matplotlib is missing)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise CifarJaxError("drawing the report needs matplotlib; pip install matplotlib") from None
    return Figure(**kwargs)


def save_png(figure, path, dpi: int) -> pathlib.Path:
    """Writes `figure` to `path` through a temporary file and a rename, so a failure never
    leaves half a PNG behind; a write error is one line (run_files.write_error)."""
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp.png")
    try:
        figure.savefig(tmp, dpi=dpi, format="png")
        os.replace(tmp, path)
    except OSError as error:
        raise write_error(path, error) from None
    finally:
        tmp.unlink(missing_ok=True)
    return path
