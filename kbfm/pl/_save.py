"""How every ``kbfm.pl`` function gets its axes and ends: save atomically, show, return.

The convention follows scanpy's ``ax=`` / ``show=`` / ``save=`` / ``return_fig=``, with
two differences: ``save`` is a path (not a suffix added to a name in ``figdir``), and the
default return value stays what it always was (scanpy returns ``None`` once it shows).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._atomic import atomic_write
from .._errors import KbfmInputError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DEFAULT_FIGURE_DIR = Path("figures")
"""Where ``save=True`` writes (``figures/<function>.png`` under the working directory)."""

_NON_INTERACTIVE_BACKENDS = frozenset({"agg", "cairo", "pdf", "pgf", "ps", "svg", "template"})


def save_figure(
    fig: Figure, path: str | os.PathLike, *, dpi: int = 150, close: bool = True
) -> Path:
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


def interactive_session() -> bool:
    """Whether matplotlib is in interactive mode on a GUI or inline backend (``show=None``).

    False in scripts, tests and CI (interactive mode off, or Agg and other file backends),
    so a plot never blocks there.
    """
    import matplotlib
    import matplotlib.pyplot as plt

    return plt.isinteractive() and matplotlib.get_backend().lower() not in (
        _NON_INTERACTIVE_BACKENDS
    )


def panel_axes(
    ax: Axes | Sequence[Axes] | None,
    n: int,
    *,
    function: str,
    new: Callable[[], tuple[Figure, Any]],
) -> tuple[Figure, list[Axes], bool]:
    """The figure and ``n`` axes to draw into: the caller's ``ax=``, else ``new()``'s.

    Parameters
    ----------
    ax
        ``None``, one Axes, or a sequence/array of Axes from one figure.
    n
        Panels the function draws; ``ax`` must hold at least that many (the first ``n``
        are used, the others left untouched).
    function
        Public name for error messages, e.g. ``"kbfm.pl.proportions"``.
    new
        Makes the function's own ``(figure, axes)`` when ``ax`` is ``None``.

    Returns
    -------
    ``(figure, axes, created)``: the root figure, every axes as a flat list (for a new
    figure all of them, for ``ax=`` the first ``n``), and whether the figure is new.
    """
    from matplotlib.axes import Axes

    if ax is None:
        fig, axes = new()
        return fig, list(np.atleast_1d(axes).ravel()), True
    given = [ax] if isinstance(ax, Axes) else list(np.asarray(ax, dtype=object).ravel())
    wrong = [type(a).__name__ for a in given if not isinstance(a, Axes)]
    if wrong or not given:
        msg = (
            f"{function}: ax= must be a matplotlib Axes or a list/array of Axes, "
            f"got {type(ax).__name__}" + (f" holding {sorted(set(wrong))}." if wrong else ".")
        )
        raise KbfmInputError(msg)
    if len(given) < n:
        msg = (
            f"{function}: draws {n} panels but ax= holds {len(given)} axes; pass {n} axes "
            f"(e.g. plt.subplots(1, {n})[1]) or ax=None for a new figure."
        )
        raise KbfmInputError(msg)
    figures = {id(_root_figure(a)) for a in given[:n]}
    if len(figures) > 1:
        msg = f"{function}: the axes in ax= must all belong to one figure."
        raise KbfmInputError(msg)
    return _root_figure(given[0]), given[:n], False


def _root_figure(ax: Axes) -> Figure:
    fig = ax.figure
    return getattr(fig, "figure", None) or fig  # a SubFigure's .figure is its root


def finish_figure(
    fig: Figure,
    result: Figure | Axes,
    *,
    name: str,
    created: bool,
    show: bool | None,
    save: str | os.PathLike | bool | None,
    return_fig: bool,
    dpi: int = 150,
) -> Figure | Axes:
    """Save, show and return the way every ``kbfm.pl`` function does.

    Parameters
    ----------
    fig
        The figure drawn into.
    result
        What the function returns by default (its figure or axes).
    name
        File stem for ``save=True`` (``figures/<name>.png``).
    created
        The function made ``fig`` (no ``ax=``): it is closed once saved. A figure the
        caller passed axes of is never closed.
    show
        ``True``: :func:`matplotlib.pyplot.show`; ``False``: never; ``None``: only for a
        figure the function made and did not save, in an :func:`interactive_session`
        (so drawing into your own axes, or saving, never shows half a figure).
    save
        Path to write (format from the suffix, atomically via :func:`save_figure`),
        ``True`` for ``figures/<name>.png``, ``None``/``False`` for none.
    return_fig
        Return ``fig`` instead of ``result``.
    dpi
        Resolution of the saved file.

    Returns
    -------
    ``fig`` when ``return_fig``, else ``result``.
    """
    import matplotlib.pyplot as plt

    path = DEFAULT_FIGURE_DIR / f"{name}.png" if save is True else save or None
    if path is not None:
        save_figure(fig, path, dpi=dpi, close=False)
    if show is None:
        show = created and path is None and interactive_session()
    if show:
        plt.show()
    if created and path is not None:
        plt.close(fig)
    return fig if return_fig else result
