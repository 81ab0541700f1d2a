"""Append the mean embedding of each spot's spatial neighbours (its tissue surroundings)."""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from .._errors import KbfmInputError
from .._keys import IMAGE_KEY
from .._provenance import record_step
from .._spatial_graph import ring_neighbours
from ..io._spatial import spatial_coords


def spatial_context(
    adata: AnnData,
    *,
    use_rep: str = IMAGE_KEY,
    rings: float = 1.0,
    groupby: str | None = None,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Concatenate each spot's embedding with the mean over its spatial neighbours.

    Expression is spatially autocorrelated, so what the tissue around a spot looks like
    helps predict the spot itself; on HER2ST this lifts image -> expression prediction
    (``benchmarks/RESULTS.md``).

    Parameters
    ----------
    adata
        Spots with ``obsm[use_rep]`` and ``obsm['spatial']``.
    use_rep
        Embedding to extend.
    rings
        Neighbourhood radius in grid steps (median nearest-spot distance; see
        :func:`kbfm._spatial_graph.ring_neighbours`).
    groupby
        ``obs`` column with the section/slide: neighbours are searched within each group
        (required when several sections share one coordinate frame).
    key_added
        ``obsm`` key of the result (default ``f"{use_rep}_context"``).
    copy
        Return a modified copy.

    Returns
    -------
    ``None`` (or the copy); writes ``obsm[key_added]`` (``n_obs x 2 * dim``).

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> a = ad.AnnData(np.zeros((9, 1)))
    >>> a.obsm["spatial"] = np.array([[x, y] for x in range(3) for y in range(3)], float)
    >>> a.obsm["X_image"] = np.arange(9, dtype=float)[:, None]
    >>> spatial_context(a)
    >>> a.obsm["X_image_context"][4]  # centre spot: itself, then the mean of all 9
    array([4., 4.], dtype=float32)
    """
    if use_rep not in adata.obsm:
        msg = f"adata.obsm[{use_rep!r}] is missing; available: {list(adata.obsm)}."
        raise KbfmInputError(msg)
    if rings <= 0:
        msg = f"rings must be > 0, got {rings}."
        raise KbfmInputError(msg)
    coords = spatial_coords(adata)
    if groupby is not None and groupby not in adata.obs:
        msg = f"obs[{groupby!r}] not found; available: {list(adata.obs.columns)}."
        raise KbfmInputError(msg)
    adata = adata.copy() if copy else adata
    embedding = np.asarray(adata.obsm[use_rep], dtype=np.float32)
    groups = (
        adata.obs[groupby].astype(str).to_numpy()
        if groupby is not None
        else np.zeros(adata.n_obs, dtype=str)
    )
    surround = np.zeros_like(embedding)
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        for row, neighbours in zip(members, ring_neighbours(coords[members], rings), strict=True):
            surround[row] = embedding[members[neighbours]].mean(0)
    key_added = key_added or f"{use_rep}_context"
    adata.obsm[key_added] = np.concatenate([embedding, surround], axis=1)
    record_step(
        adata,
        "spatial_context",
        use_rep=use_rep,
        rings=rings,
        groupby=groupby,
        key_added=key_added,
    )
    return adata if copy else None
