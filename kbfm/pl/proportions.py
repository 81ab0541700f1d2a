"""Maps of cell-type proportions per spot."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from anndata import AnnData

from .._errors import KbfmInputError
from ..io._spatial import spatial_coords
from ._save import finish_figure, panel_axes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def proportions(
    adata: AnnData,
    *,
    key: str = "kbfm_proportions",
    cell_types: list[str] | None = None,
    ncols: int = 4,
    spot_size: float = 8.0,
    cmap: str = "viridis",
    ax: Axes | Sequence[Axes] | None = None,
    show: bool | None = None,
    save: str | os.PathLike | bool | None = None,
    return_fig: bool = False,
) -> Figure:
    """One spatial panel per cell type, coloured by its proportion in each spot.

    Parameters
    ----------
    adata
        Spots with ``obsm["spatial"]`` and ``obsm[key]`` from :func:`kbfm.tl.deconvolve`.
    key
        ``obsm`` key of the proportions.
    cell_types
        Panels to draw (default: all columns).
    ncols
        Panels per row.
    spot_size
        Marker size.
    cmap
        Colour map.
    ax
        Axes to draw into, one per cell type (a list or array with at least that many;
        ``ncols`` is then unused); ``None`` makes a new grid figure.
    show
        Show the figure: ``True`` always, ``False`` never, ``None`` only in an
        interactive session, for a figure made here and not saved (never in scripts,
        tests or CI, nor when drawing into your ``ax``).
    save
        Write the figure here (format from the suffix, written atomically); ``True``
        writes ``figures/proportions.png``. A new figure is closed once saved.
    return_fig
        Return the figure (it is returned either way; kept for the common ``pl`` API).

    Returns
    -------
    The matplotlib figure.

    Examples
    --------
    >>> fig = kbfm.pl.proportions(spots)  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    if key not in adata.obsm:
        msg = f"adata.obsm[{key!r}] is missing; run kbfm.tl.deconvolve(adata, ...) first."
        raise KbfmInputError(msg)
    if "spatial" not in adata.obsm:
        msg = "adata.obsm['spatial'] is missing; proportion maps need spot coordinates."
        raise KbfmInputError(msg)
    P = adata.obsm[key]
    columns = list(getattr(P, "columns", range(np.asarray(P).shape[1])))
    cell_types = columns if cell_types is None else list(cell_types)
    unknown = [c for c in cell_types if c not in columns]
    if unknown:
        msg = f"Cell types {unknown} are not in obsm[{key!r}]; available: {columns}."
        raise KbfmInputError(msg)
    values = np.asarray(P)
    xy = spatial_coords(adata)
    nrows = int(np.ceil(len(cell_types) / ncols))
    fig, axes, created = panel_axes(
        ax,
        len(cell_types),
        function="kbfm.pl.proportions",
        new=lambda: plt.subplots(nrows, ncols, figsize=(3.0 * ncols, 2.8 * nrows), squeeze=False),
    )
    for panel in axes:
        panel.set_axis_off()
    for panel, ct in zip(axes, cell_types, strict=False):
        v = values[:, columns.index(ct)]
        sc = panel.scatter(
            xy[:, 0], xy[:, 1], c=v, s=spot_size, cmap=cmap, vmin=0, vmax=max(v.max(), 1e-6)
        )
        panel.invert_yaxis()
        panel.set_aspect("equal")
        panel.set_title(f"{ct} (mean {v.mean():.2f})", fontsize=9)
        fig.colorbar(sc, ax=panel, fraction=0.046, pad=0.02)
    if created:
        fig.tight_layout()
    return finish_figure(
        fig,
        fig,
        name="proportions",
        created=created,
        show=show,
        save=save,
        return_fig=return_fig,
    )
