"""Figures for the web app: the tissue over its H&E, and the UMAP in the same colours."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from .._errors import KbfmInputError
from .data import color_options


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7.5, 6.0))


def _plottable(adata: AnnData, color: str | None) -> AnnData:
    """A view whose ``obs[color]`` is plottable: booleans as strings, categories kept."""
    if color is None:
        return adata
    if color not in adata.obs:
        msg = f"No obs column {color!r} to colour by; available: {color_options(adata)}."
        raise KbfmInputError(msg)
    if pd.api.types.is_bool_dtype(adata.obs[color]):
        shown = AnnData(obs=adata.obs[[color]].astype(str), obsm=dict(adata.obsm), uns=adata.uns)
        return shown
    return adata


def tissue_figure(adata: AnnData, color: str | None, *, title: str | None = None):
    """Spots in tissue coordinates, over the H&E when the data carries one.

    Parameters
    ----------
    adata
        Data with ``obsm["spatial"]``.
    color
        ``obs`` column (categorical gets a legend, numeric a colour bar), or ``None``.
    title
        Figure title (default: the column name).

    Returns
    -------
    The matplotlib figure.
    """
    from ..pl import spatial_scatter

    if "spatial" not in adata.obsm:
        msg = "This data has no spot coordinates (obsm['spatial']), so there is no tissue view."
        raise KbfmInputError(msg)
    fig, ax = _figure()
    spatial_scatter(_plottable(adata, color), color, ax=ax, cmap="magma")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def umap_figure(adata: AnnData, color: str, *, title: str | None = None):
    """The UMAP (``obsm["X_umap"]``) coloured by an ``obs`` column.

    Categories get the colours :func:`kbfm.pl.spatial_scatter` gives them (tab20 in order
    of first appearance), so the tissue and the UMAP side by side agree.

    Parameters
    ----------
    adata
        Data with ``obsm["X_umap"]`` (see :func:`prepare`).
    color
        ``obs`` column.
    title
        Panel title (default: the column name).

    Returns
    -------
    The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    if "X_umap" not in adata.obsm:
        msg = "No UMAP in obsm['X_umap']; load the data again so it is computed."
        raise KbfmInputError(msg)
    values = _plottable(adata, color).obs[color].to_numpy()
    xy = np.asarray(adata.obsm["X_umap"])[:, :2]
    fig, ax = _figure()
    size = max(4.0, min(30.0, 6000.0 / max(adata.n_obs, 1)))
    if values.dtype.kind in "biuf":
        points = ax.scatter(xy[:, 0], xy[:, 1], c=values, s=size, cmap="magma", linewidths=0)
        fig.colorbar(points, ax=ax, shrink=0.7, label=color)
    else:
        cats = list(dict.fromkeys(map(str, values)))
        colours = plt.get_cmap("tab20")(np.arange(len(cats)) % 20)
        for cat, colour in zip(cats, colours, strict=True):
            keep = values.astype(str) == cat
            ax.scatter(xy[keep, 0], xy[keep, 1], s=size, color=colour, label=cat, linewidths=0)
        ax.legend(loc="center left", bbox_to_anchor=(1, 0.5), frameon=False, markerscale=2)
    ax.set_title(title or color)
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return fig


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write a figure as PNG and close it.

    Parameters
    ----------
    fig
        Matplotlib figure.
    path
        Destination ``.png``.

    Returns
    -------
    The path written.
    """
    from ..pl._save import save_figure as _save

    return _save(fig, path, dpi=100)
