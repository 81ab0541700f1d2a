"""Side-by-side 2-D embedding panels coloured by ``obs`` columns."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData

from .._errors import KbfmInputError
from ._save import finish_figure, panel_axes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def embedding_panels(
    adata: AnnData,
    *,
    basis: str = "X_umap",
    color: Sequence[str] = (),
    titles: Sequence[str] | None = None,
    point_size: float = 6.0,
    ax: Axes | Sequence[Axes] | None = None,
    show: bool | None = None,
    save: str | os.PathLike | bool | None = None,
    return_fig: bool = False,
    path: str | os.PathLike | None = None,
) -> Figure:
    """Draw one scatter panel per ``obs`` column over a 2-D embedding.

    Parameters
    ----------
    adata
        Data with ``obsm[basis]`` (first two columns are plotted).
    basis
        ``obsm`` key, e.g. ``"X_umap"``.
    color
        ``obs`` columns: categorical ones get a legend, numeric ones a colour bar.
    titles
        Panel titles (default: the column names).
    point_size
        Marker size.
    ax
        Axes to draw into, one per ``color`` column (a single Axes for one column, else
        a list or array of them); ``None`` makes a new figure with a row of panels.
    show
        Show the figure: ``True`` always, ``False`` never, ``None`` only in an
        interactive session, for a figure made here and not saved (never in scripts,
        tests or CI, nor when drawing into your ``ax``).
    save
        Write the figure there (format from the suffix, written atomically); ``True``
        writes ``figures/embedding_panels.png``. A new figure is closed once saved.
    return_fig
        Return the figure (it is returned either way; kept for the common ``pl`` API).
    path
        Older name of ``save`` (a path), kept for existing callers.

    Returns
    -------
    The matplotlib figure (already closed when it was made here and saved).

    Examples
    --------
    >>> fig = kbfm.pl.embedding_panels(adata, color=["cell_type"], show=False)  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    if basis not in adata.obsm:
        msg = f"adata.obsm[{basis!r}] not found; available: {list(adata.obsm)}."
        raise KbfmInputError(msg)
    missing = [c for c in color if c not in adata.obs]
    if missing or not color:
        msg = (
            f"color columns {missing or '(none given)'} not in adata.obs; "
            f"available: {list(adata.obs)}."
        )
        raise KbfmInputError(msg)
    if path is not None and save not in (None, False):
        msg = "kbfm.pl.embedding_panels: give save= or its older name path=, not both."
        raise KbfmInputError(msg)
    save = path if path is not None else save
    xy = np.asarray(adata.obsm[basis])[:, :2]
    titles = list(titles) if titles is not None else list(color)
    fig, axes, created = panel_axes(
        ax,
        len(color),
        function="kbfm.pl.embedding_panels",
        new=lambda: plt.subplots(1, len(color), figsize=(6.2 * len(color), 5.2)),
    )
    for panel, col, title in zip(axes, color, titles, strict=True):
        values = adata.obs[col]
        if isinstance(values.dtype, pd.CategoricalDtype) or values.dtype == object:
            cats = pd.Categorical(values)
            cmap = plt.get_cmap("tab20", max(len(cats.categories), 1))
            for k, cat in enumerate(cats.categories):
                sel = cats == cat
                panel.scatter(xy[sel, 0], xy[sel, 1], s=point_size, color=cmap(k), label=str(cat))
            panel.legend(
                fontsize=6,
                markerscale=2,
                loc="center left",
                bbox_to_anchor=(1.0, 0.5),
                frameon=False,
            )
        else:
            sc = panel.scatter(
                xy[:, 0], xy[:, 1], s=point_size, c=values.to_numpy(), cmap="viridis"
            )
            fig.colorbar(sc, ax=panel, shrink=0.7)
        panel.set_title(title, fontsize=10)
        panel.set_xticks([])
        panel.set_yticks([])
    if created:
        fig.tight_layout()
    return finish_figure(
        fig,
        fig,
        name="embedding_panels",
        created=created,
        show=show,
        save=save,
        return_fig=return_fig,
        dpi=110,
    )
