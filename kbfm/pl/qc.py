"""QC figures: metric distributions with the auto_qc thresholds, and flagged spots in space."""

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

_METRICS = (
    ("total_counts", "total counts", True),
    ("n_genes", "detected genes", True),
    ("pct_mito", "% mitochondrial", False),
    ("pct_ribo", "% ribosomal", False),
    ("pct_hb", "% haemoglobin", False),
)


def _thresholds(adata: AnnData) -> dict:
    step = adata.uns.get("kbfm", {}).get("auto_qc", {})
    return step.get("thresholds", {}) if isinstance(step, dict) else {}


def qc_metrics(
    adata: AnnData,
    *,
    key: str = "kbfm_qc",
    batch_key: str | None = None,
    ax: Axes | Sequence[Axes] | None = None,
    show: bool | None = None,
    save: str | os.PathLike | bool | None = None,
    return_fig: bool = False,
) -> Figure:
    """Histograms of the QC metrics with the thresholds auto_qc used (one panel a metric).

    Parameters
    ----------
    adata
        Data after :func:`kbfm.pp.auto_qc`.
    key
        Its ``key_added``.
    batch_key
        Colour by this ``obs`` column (thresholds are drawn per batch).
    ax
        Axes to draw into, one per metric present (a list or array; the figure title is
        then left to you); ``None`` makes a new row of panels.
    show
        Show the figure: ``True`` always, ``False`` never, ``None`` only in an
        interactive session, for a figure made here and not saved (never in scripts,
        tests or CI, nor when drawing into your ``ax``).
    save
        Write the figure here (format from the suffix, written atomically); ``True``
        writes ``figures/qc_metrics.png``. A new figure is closed once saved.
    return_fig
        Return the figure (it is returned either way; kept for the common ``pl`` API).

    Returns
    -------
    The matplotlib figure.

    Examples
    --------
    >>> fig = kbfm.pl.qc_metrics(adata)  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    if f"{key}_pass" not in adata.obs.columns:
        msg = f"No QC results under obs['{key}_*']; run kbfm.pp.auto_qc(adata) first."
        raise KbfmInputError(msg)
    thresholds = _thresholds(adata)
    panels = [m for m in _METRICS if f"{key}_{m[0]}" in adata.obs.columns]
    fig, axes, created = panel_axes(
        ax,
        len(panels),
        function="kbfm.pl.qc_metrics",
        new=lambda: plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 2.8)),
    )
    batches = ["all"] if batch_key is None else sorted(adata.obs[batch_key].astype(str).unique())
    for panel, (metric, label, log) in zip(axes, panels, strict=True):
        values = adata.obs[f"{key}_{metric}"].to_numpy(dtype=float)
        for b in batches:
            sel = (
                np.ones(adata.n_obs, bool)
                if batch_key is None
                else (adata.obs[batch_key].astype(str) == b).to_numpy()
            )
            x = np.log10(values[sel] + 1) if log else values[sel]
            panel.hist(x, bins=40, alpha=0.6, label=None if batch_key is None else b)
            thr_key = "total_counts" if metric == "total_counts" else metric
            for t in thresholds.get(b, {}).get(thr_key, []):
                if np.isfinite(t) and t > 0:
                    panel.axvline(np.log10(t + 1) if log else t, color="crimson", ls="--", lw=1)
        panel.set_xlabel(f"log10({label} + 1)" if log else label)
        panel.set_ylabel("spots")
    if batch_key is not None:
        axes[0].legend(fontsize=7)
    if created:
        fig.suptitle("QC metrics; dashed: auto_qc thresholds", fontsize=9)
        fig.tight_layout()
    return finish_figure(
        fig,
        fig,
        name="qc_metrics",
        created=created,
        show=show,
        save=save,
        return_fig=return_fig,
    )


def qc_spatial(
    adata: AnnData,
    *,
    key: str = "kbfm_qc",
    spot_size: float = 8.0,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | os.PathLike | bool | None = None,
    return_fig: bool = False,
) -> Figure:
    """Spatial map of spots: passing in grey, failing coloured by their first reason.

    Parameters
    ----------
    adata
        Data after :func:`kbfm.pp.auto_qc`, with ``obsm["spatial"]``.
    key
        auto_qc's ``key_added``.
    spot_size
        Marker size of passing spots (failing ones are drawn 1.8 times larger).
    ax
        Matplotlib axes to draw into (``None``: a new figure).
    show
        Show the figure: ``True`` always, ``False`` never, ``None`` only in an
        interactive session, for a figure made here and not saved (never in scripts,
        tests or CI, nor when drawing into your ``ax``).
    save
        Write the figure here (format from the suffix, written atomically); ``True``
        writes ``figures/qc_spatial.png``. A new figure is closed once saved.
    return_fig
        Return the figure (it is returned either way; kept for the common ``pl`` API).

    Returns
    -------
    The matplotlib figure.

    Examples
    --------
    >>> fig = kbfm.pl.qc_spatial(adata)  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    if "spatial" not in adata.obsm:
        msg = "adata.obsm['spatial'] is missing; spatial QC maps need spot coordinates."
        raise KbfmInputError(msg)
    if f"{key}_reason" not in adata.obs.columns:
        msg = f"No QC results under obs['{key}_*']; run kbfm.pp.auto_qc(adata) first."
        raise KbfmInputError(msg)
    xy = spatial_coords(adata)
    first = adata.obs[f"{key}_reason"].astype(str).str.split(";").str[0].to_numpy()
    fig, (ax,), created = panel_axes(
        ax, 1, function="kbfm.pl.qc_spatial", new=lambda: plt.subplots(figsize=(5.5, 5))
    )
    ok = first == ""
    ax.scatter(xy[ok, 0], xy[ok, 1], s=spot_size, c="lightgrey", label=f"pass ({ok.sum()})")
    for reason in sorted(set(first[~ok])):
        sel = first == reason
        ax.scatter(xy[sel, 0], xy[sel, 1], s=spot_size * 1.8, label=f"{reason} ({sel.sum()})")
    if f"{key}_edge" in adata.obs.columns:
        edge = adata.obs[f"{key}_edge"].to_numpy(bool) & ok
        if edge.any():
            ax.scatter(
                xy[edge, 0],
                xy[edge, 1],
                s=spot_size,
                facecolors="none",
                edgecolors="k",
                lw=0.4,
                label=f"edge, pass ({edge.sum()})",
            )
    ax.invert_yaxis()
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.set_title("spots failing QC (first reason)", fontsize=9)
    if created:
        fig.tight_layout()
    return finish_figure(
        fig,
        fig,
        name="qc_spatial",
        created=created,
        show=show,
        save=save,
        return_fig=return_fig,
    )
