"""Side-by-side 2-D embedding panels coloured by ``obs`` columns."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .._errors import KbfmInputError
from ._save import save_figure


def embedding_panels(
    adata: AnnData,
    *,
    basis: str = "X_umap",
    color: Sequence[str] = (),
    titles: Sequence[str] | None = None,
    path: str | os.PathLike | None = None,
    point_size: float = 6.0,
):
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
    path
        Save the figure there (PNG, written atomically) and close it.
    point_size
        Marker size.

    Returns
    -------
    The matplotlib figure (already closed when ``path`` is given).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
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
    xy = np.asarray(adata.obsm[basis])[:, :2]
    titles = list(titles) if titles is not None else list(color)
    fig, axes = plt.subplots(1, len(color), figsize=(6.2 * len(color), 5.2), squeeze=False)
    for ax, col, title in zip(axes[0], color, titles, strict=True):
        values = adata.obs[col]
        if isinstance(values.dtype, pd.CategoricalDtype) or values.dtype == object:
            cats = pd.Categorical(values)
            cmap = plt.get_cmap("tab20", max(len(cats.categories), 1))
            for k, cat in enumerate(cats.categories):
                sel = cats == cat
                ax.scatter(xy[sel, 0], xy[sel, 1], s=point_size, color=cmap(k), label=str(cat))
            ax.legend(
                fontsize=6,
                markerscale=2,
                loc="center left",
                bbox_to_anchor=(1.0, 0.5),
                frameon=False,
            )
        else:
            sc = ax.scatter(xy[:, 0], xy[:, 1], s=point_size, c=values.to_numpy(), cmap="viridis")
            fig.colorbar(sc, ax=ax, shrink=0.7)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path, dpi=110)
    return fig
