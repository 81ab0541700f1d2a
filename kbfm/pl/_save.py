"""The one way kbfm writes a figure: atomically, format from the file's suffix."""

from __future__ import annotations

import os
from pathlib import Path

from .._atomic import atomic_write


def save_figure(fig, path: str | os.PathLike, *, dpi: int = 150, close: bool = True) -> Path:
    """Write ``fig`` to ``path`` (temp file + rename) and, by default, close it.

    Parameters
    ----------
    fig
        Matplotlib figure.
    path
        Destination; the suffix picks the format (``.png`` when there is none).
    dpi
        Resolution of raster formats.
    close
        Close the figure after writing (also when writing fails).

    Returns
    -------
    The path written.
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=fmt))
    finally:
        if close:
            plt.close(fig)
    return path
