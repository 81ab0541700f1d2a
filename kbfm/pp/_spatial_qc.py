"""Spatial QC checks on spot positions: isolated spots, tissue edge, local outliers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .._spatial_graph import kneighbors


@dataclass
class SpotGraph:
    """Spot neighbourhoods.

    ``neighbors`` are the spots within 1.5 x the typical spacing (the grid ring) and
    ``knn`` the ``k`` nearest spots whatever their distance (for local comparisons,
    which must also work on sub-sampled spots). ``contiguous`` says whether the spots
    form a filled grid (median ring size >= 3); isolation and edges only mean something
    then.
    """

    neighbors: list[np.ndarray]
    knn: np.ndarray
    n_neighbors: np.ndarray
    spacing: float
    full: int
    contiguous: bool


def spot_graph(
    coords: np.ndarray, *, max_neighbors: int = 8, factor: float = 1.5, k: int = 6
) -> SpotGraph:
    """Build the neighbour lists of a spot grid from coordinates.

    ``spacing`` is the median nearest-neighbour distance; two spots are neighbours when
    closer than ``factor * spacing``. ``full`` is the most common neighbour count
    (6 on a Visium hexagonal grid, 4 on a square grid): spots with fewer lie on an edge.

    Parameters
    ----------
    coords
        Spot positions (``n_spots x n_dims``).
    max_neighbors
        Most ring neighbours counted per spot.
    factor
        Ring radius in multiples of the spacing.
    k
        Nearest spots kept in ``knn`` (for local comparisons).

    Returns
    -------
    The :class:`SpotGraph`; neighbours come from :func:`kbfm._spatial_graph.kneighbors`.
    """
    coords = np.asarray(coords, dtype=float)
    dist, idx = kneighbors(coords, max(max_neighbors, k), include_self=True)
    nearest = dist[:, 1] if dist.shape[1] > 1 else np.zeros(len(coords))
    spacing = float(np.median(nearest)) if nearest.size else 0.0
    radius = factor * spacing if spacing > 0 else np.inf
    neighbors = [
        row_idx[1:][row_dist[1:] <= radius] for row_dist, row_idx in zip(dist, idx, strict=True)
    ]
    n_nb = np.array([len(n) for n in neighbors])
    counts = np.bincount(n_nb) if n_nb.size else np.array([0])
    contiguous = bool(np.median(n_nb) >= 3) if n_nb.size else False
    knn = idx[:, 1 : k + 1]
    return SpotGraph(neighbors, knn, n_nb, spacing, int(np.argmax(counts)), contiguous)


def local_log_ratio(values: np.ndarray, graph: SpotGraph) -> np.ndarray:
    """``values[i]`` minus the median over its ``k`` nearest spots."""
    return values - np.median(values[graph.knn], axis=1)


def neighbor_correlation(X, graph: SpotGraph, *, n_genes: int = 500) -> np.ndarray:
    """Pearson correlation of each spot's log profile with its neighbours' mean profile.

    Uses the ``n_genes`` genes with the highest mean and the ``k`` nearest spots.
    A spot that looks like the sum of two distant spots correlates less with its
    neighbourhood than its neighbours do with theirs.
    """
    X = sp.csr_matrix(X) if sp.issparse(X) else np.asarray(X)
    totals = np.asarray(X.sum(axis=1)).ravel()
    totals[totals == 0] = 1.0
    means = np.asarray(X.mean(axis=0)).ravel()
    top = np.argsort(-means)[: min(n_genes, X.shape[1])]
    sub = X[:, top]
    sub = sub.toarray() if sp.issparse(sub) else np.asarray(sub, dtype=float)
    logn = np.log1p(sub / totals[:, None] * 1e4)
    out = np.full(X.shape[0], np.nan)
    for i, nb in enumerate(graph.knn):
        if len(nb) == 0:
            continue
        a = logn[i] - logn[i].mean()
        b = logn[nb].mean(axis=0)
        b = b - b.mean()
        denom = np.sqrt((a * a).sum() * (b * b).sum())
        out[i] = float((a * b).sum() / denom) if denom > 0 else np.nan
    return out
