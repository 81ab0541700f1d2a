"""Spots over the H&E, and mosaics of the patches an encoder saw."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from anndata import AnnData

from .._errors import KbfmInputError
from ..io._spatial import SPATIAL_KEY, library_id_for, spatial_coords
from ._save import finish_figure, panel_axes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _values(adata: AnnData, color: str) -> tuple[np.ndarray, str]:
    """Values to colour by: an obs column, a gene, ``obsm_key:column`` or ``obsm_key:index``."""
    if color in adata.obs:
        return adata.obs[color].to_numpy(), color
    if color in adata.var_names:
        x = adata[:, color].X
        return np.asarray(x.toarray() if hasattr(x, "toarray") else x).ravel(), color
    if ":" in color:
        key, col = color.split(":", 1)
        if key in adata.obsm:
            m = adata.obsm[key]
            if hasattr(m, "columns") and col in m.columns:
                return np.asarray(m[col]), color
            if col.isdigit():
                return np.asarray(m)[:, int(col)], color
    msg = (
        f"color={color!r} is not an obs column, a gene, or 'obsm_key:column' "
        f"(obsm keys: {list(adata.obsm)})."
    )
    raise KbfmInputError(msg)


def spatial_scatter(
    adata: AnnData,
    color: str | None = None,
    *,
    library_id: str | None = None,
    image: bool = True,
    spot_size: float | None = None,
    cmap: str = "viridis",
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | os.PathLike | bool | None = None,
    return_fig: bool = False,
) -> Axes | Figure:
    """Scatter spots over the stored H&E image, coloured by an obs/var/obsm value.

    Parameters
    ----------
    adata
        Spots with ``obsm['spatial']`` in full-resolution pixels.
    color
        ``obs`` column, gene, ``"obsm_key:column"`` (e.g.
        ``"kbfm_predicted_expression:ERBB2"``) or ``"X_image:0"``; ``None`` for plain spots.
    library_id
        Which ``uns['spatial']`` image to draw.
    image
        Draw the ``hires`` (else ``lowres``) image under the spots.
    spot_size
        Marker diameter in image pixels (default: the spot diameter).
    cmap
        Colormap for numeric values.
    ax
        Matplotlib axes to draw into (``None``: a new 6 x 6 inch figure).
    show
        Show the figure: ``True`` always, ``False`` never, ``None`` only in an
        interactive session, for a figure made here and not saved (never in scripts,
        tests or CI, nor when drawing into your ``ax``).
    save
        Write the figure here (PNG/PDF by suffix, written atomically); ``True`` writes
        ``figures/spatial_scatter.png``. A new figure is closed once saved; the figure
        of an ``ax`` you passed is saved whole and left open.
    return_fig
        Return the figure instead of the axes.

    Returns
    -------
    The matplotlib axes, or the figure when ``return_fig``.

    Examples
    --------
    >>> spatial_scatter(adata, "kbfm_predicted_expression:ERBB2")  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    coords = spatial_coords(adata)
    scale, img, diameter = 1.0, None, None
    if adata.uns.get(SPATIAL_KEY):
        lib = adata.uns[SPATIAL_KEY][library_id_for(adata, library_id)]
        factors = lib.get("scalefactors", {})
        diameter = factors.get("spot_diameter_fullres")
        for res in ("hires", "lowres"):
            if image and res in lib.get("images", {}):
                img, scale = lib["images"][res], float(factors[f"tissue_{res}_scalef"])
                break
    fig, (ax,), created = panel_axes(
        ax, 1, function="kbfm.pl.spatial_scatter", new=lambda: plt.subplots(figsize=(6, 6))
    )
    if img is not None:
        ax.imshow(img)
    xy = coords * scale
    size = (spot_size or diameter or 20.0) * scale
    # image pixels -> display pixels (axes width / image width) -> points (72 / dpi)
    points_per_px = (
        72.0
        / ax.figure.dpi
        * ax.get_window_extent().width
        / max((img.shape[1] if img is not None else np.ptp(xy[:, 0]) or 1), 1)
    )
    s = (size * points_per_px) ** 2
    if color is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=s, c="tab:blue", alpha=0.7, linewidths=0)
    else:
        values, label = _values(adata, color)
        if values.dtype.kind in "biuf":
            sc = ax.scatter(xy[:, 0], xy[:, 1], c=values, s=s, cmap=cmap, linewidths=0)
            ax.figure.colorbar(sc, ax=ax, shrink=0.7, label=label)
        else:
            cats = list(dict.fromkeys(map(str, values)))
            colors = plt.get_cmap("tab20")(np.arange(len(cats)) % 20)
            for cat, col in zip(cats, colors, strict=True):
                keep = values.astype(str) == cat
                ax.scatter(xy[keep, 0], xy[keep, 1], s=s, color=col, label=cat, linewidths=0)
            ax.legend(loc="center left", bbox_to_anchor=(1, 0.5), frameon=False)
        ax.set_title(label)
    if img is None:
        ax.invert_yaxis()
    ax.set_aspect("equal")
    ax.set_axis_off()
    return finish_figure(
        fig,
        ax,
        name="spatial_scatter",
        created=created,
        show=show,
        save=save,
        return_fig=return_fig,
    )


def patch_mosaic(
    adata: AnnData,
    spots: Sequence[str] | None = None,
    *,
    slide=None,
    n: int = 16,
    ncols: int = 4,
    patch=None,
    mpp: float | None = None,
    color: str | None = None,
    ax: Axes | Sequence[Axes] | None = None,
    show: bool | None = None,
    save: str | os.PathLike | bool | None = None,
    return_fig: bool = False,
) -> Figure:
    """Grid of the patches around chosen spots (what the image encoder sees).

    Parameters
    ----------
    adata
        Spots with ``obsm['spatial']``.
    spots
        ``obs_names`` to show (default: the first ``n``).
    slide
        Image path or Slide (default: the stored ``source_image_path``).
    n, ncols
        Number of patches when ``spots`` is not given, and grid columns.
    patch
        :class:`~kbfm.io.patches.PatchSpec` (default 224 px at 0.5 µm/px).
    mpp
        Microns per slide pixel, when neither the slide nor ``adata`` knows it.
    color
        Optional obs/var/obsm value printed above each patch.
    ax
        Axes to draw into, one per patch (a list or array with at least as many as there
        are spots; ``ncols`` is then unused); ``None`` makes a new grid figure.
    show
        Show the figure: ``True`` always, ``False`` never, ``None`` only in an
        interactive session, for a figure made here and not saved (never in scripts,
        tests or CI, nor when drawing into your ``ax``).
    save
        Write the figure here (format from the suffix, written atomically); ``True``
        writes ``figures/patch_mosaic.png``. A new figure is closed once saved.
    return_fig
        Return the figure (it is returned either way; kept for the common ``pl`` API).

    Returns
    -------
    The matplotlib figure.

    Examples
    --------
    >>> patch_mosaic(adata, n=8)  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    from ..im.embed_image import _resolve_mpp, _slide_source
    from ..io.patches import PatchSpec, extract_patches
    from ..io.slide import Slide, open_slide

    names = list(spots) if spots is not None else list(adata.obs_names[:n])
    missing = [s for s in names if s not in adata.obs_names]
    if missing:
        msg = f"{len(missing)} spots not in obs_names, e.g. {missing[:3]}."
        raise KbfmInputError(msg)
    idx = adata.obs_names.get_indexer(names)
    source = _slide_source(adata, slide, None)
    opened = source if isinstance(source, Slide) else open_slide(source)
    try:
        _resolve_mpp(adata, opened, mpp, None)
        patches, _ = extract_patches(opened, spatial_coords(adata)[idx], patch or PatchSpec())
    finally:
        if opened is not slide:  # opened here from a path: release its file handle
            opened.close()
    labels = _values(adata, color)[0][idx] if color else None
    nrows = int(np.ceil(len(names) / ncols))
    fig, axes, created = panel_axes(
        ax,
        len(names),
        function="kbfm.pl.patch_mosaic",
        new=lambda: plt.subplots(nrows, ncols, figsize=(2 * ncols, 2.1 * nrows), squeeze=False),
    )
    for k, panel in enumerate(axes):
        panel.set_axis_off()
        if k < len(names):
            panel.imshow(patches[k])
            title = (
                names[k]
                if labels is None
                else f"{names[k]}\n{labels[k]:.3g}"
                if (np.asarray(labels).dtype.kind in "biuf")
                else f"{names[k]}\n{labels[k]}"
            )
            panel.set_title(title, fontsize=7)
    if created:
        fig.tight_layout()
    return finish_figure(
        fig,
        fig,
        name="patch_mosaic",
        created=created,
        show=show,
        save=save,
        return_fig=return_fig,
    )
