"""Maps of cell-type proportions per spot."""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from .._errors import KbfmInputError
from ..io._spatial import spatial_coords


def proportions(
    adata: AnnData,
    *,
    key: str = "kbfm_proportions",
    cell_types: list[str] | None = None,
    ncols: int = 4,
    spot_size: float = 8.0,
    cmap: str = "viridis",
):
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
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.0 * ncols, 2.8 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, ct in zip(axes.ravel(), cell_types, strict=False):
        v = values[:, columns.index(ct)]
        sc = ax.scatter(
            xy[:, 0], xy[:, 1], c=v, s=spot_size, cmap=cmap, vmin=0, vmax=max(v.max(), 1e-6)
        )
        ax.invert_yaxis()
        ax.set_aspect("equal")
        ax.set_title(f"{ct} (mean {v.mean():.2f})", fontsize=9)
        fig.colorbar(sc, ax=ax, fraction=0.046, pad=0.02)
    fig.tight_layout()
    return fig
