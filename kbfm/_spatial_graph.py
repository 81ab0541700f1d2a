"""Spot neighbourhood graphs: the one place kbfm finds spatial neighbours.

Every tool that needs the spots near a spot asks this module: k nearest spots
(:func:`kneighbors`, :func:`knn_graph`, :func:`spatial_knn_graph`,
:func:`spatial_adjacency`), the spots within a radius or a number of grid rings
(:func:`radius_neighbours`, :func:`grid_spacing`, :func:`ring_neighbours`), and the graph
stored on an AnnData where squidpy puts it (:func:`spatial_connectivities`).

All searches are exact Euclidean searches with scikit-learn's ``NearestNeighbors`` (the
same search ``squidpy.gr.spatial_neighbors(coord_type="generic")`` runs), so neighbour
sets and tie order are identical whichever function asks. ``include_self=True`` queries
the spots themselves with one extra neighbour (the spot is then column 0, unless another
spot sits at exactly the same position); ``include_self=False`` is squidpy's convention
(``kneighbors()`` without a query: the spot itself is always removed).

This is a bottom-layer module: it imports only numpy, scipy, scikit-learn, anndata,
optionally squidpy, and ``kbfm._errors``.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from ._errors import KbfmInputError
from ._keys import DISTANCES_KEY, GRAPH_KEY

log = logging.getLogger("kbfm")

__all__ = [
    "DISTANCES_KEY",
    "GRAPH_KEY",
    "grid_spacing",
    "kneighbors",
    "knn_graph",
    "radius_neighbours",
    "ring_neighbours",
    "spatial_adjacency",
    "spatial_connectivities",
    "spatial_knn_graph",
]


def kneighbors(
    coords: np.ndarray, n_neighbors: int, *, include_self: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Distances and indices of each spot's nearest spots, nearest first.

    Parameters
    ----------
    coords
        Spot positions (``n_spots x n_dims``).
    n_neighbors
        Neighbours per spot, not counting the spot itself; capped by the number of spots.
    include_self
        ``True``: query the spots themselves and return ``n_neighbors + 1`` columns, the
        spot itself first (another spot at the very same position may come first
        instead). ``False``: the spot itself removed, ``n_neighbors`` columns (squidpy's
        convention).

    Returns
    -------
    ``(distances, indices)``, both ``n_spots x columns``.
    """
    from sklearn.neighbors import NearestNeighbors

    n = len(coords)
    if include_self:
        return NearestNeighbors(n_neighbors=min(n_neighbors + 1, n)).fit(coords).kneighbors(coords)
    k = min(n_neighbors, n - 1)
    return NearestNeighbors(n_neighbors=k).fit(coords).kneighbors()


def knn_graph(coords: np.ndarray, n_neighbors: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Directed k-nearest-spot graph, self excluded, as squidpy builds it.

    Parameters
    ----------
    coords
        Spot positions (``n_spots x n_dims``).
    n_neighbors
        Neighbours per spot (capped at ``n_spots - 1``).

    Returns
    -------
    ``(connectivities, distances)``: CSR ``float32`` matrices, row ``i`` holding a 1
    (resp. the distance) at each of spot ``i``'s nearest spots; not symmetric.
    """
    dist, idx = kneighbors(coords, n_neighbors, include_self=False)
    n = len(coords)
    rows = np.repeat(np.arange(n), idx.shape[1])
    shape = (n, n)
    conn = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, idx.ravel())), shape=shape)
    dists = sp.csr_matrix((dist.ravel().astype(np.float32), (rows, idx.ravel())), shape=shape)
    return conn, dists


def spatial_knn_graph(coords: np.ndarray, n_neighbors: int) -> sp.csr_matrix:
    """Binary symmetric k-nearest-spot graph.

    Parameters
    ----------
    coords
        Spot positions (``n_spots x n_dims``).
    n_neighbors
        Neighbours per spot before symmetrising.

    Returns
    -------
    CSR ``float32`` with 1 where either spot is among the other's nearest; no self loops.
    """
    _, idx = kneighbors(coords, n_neighbors, include_self=True)
    n = len(coords)
    rows = np.repeat(np.arange(n), idx.shape[1])
    graph = sp.csr_matrix((np.ones(rows.size), (rows, idx.ravel())), shape=(n, n))
    graph.setdiag(0)
    graph.eliminate_zeros()
    return sp.csr_matrix(((graph + graph.T) > 0).astype(np.float32))


def spatial_adjacency(coords: np.ndarray, n_neighbors: int) -> sp.csr_matrix:
    """Row-normalised symmetric k-nearest-spot adjacency.

    Parameters
    ----------
    coords
        Spot positions (``n_spots x n_dims``).
    n_neighbors
        Neighbours per spot before symmetrising.

    Returns
    -------
    :func:`spatial_knn_graph` with each row divided by its degree (CSR, no self loops).
    """
    graph = spatial_knn_graph(coords, n_neighbors)
    degree = np.asarray(graph.sum(1)).ravel()
    return sp.csr_matrix(sp.diags(1.0 / np.maximum(degree, 1)) @ graph)


def grid_spacing(coords: np.ndarray) -> float:
    """Median distance from a spot to its nearest other spot (the grid step).

    Parameters
    ----------
    coords
        Spot positions (``n_spots x n_dims``).

    Returns
    -------
    The spacing; ``0.0`` with fewer than two spots.
    """
    if len(coords) < 2:
        return 0.0
    return float(np.median(kneighbors(coords, 1)[0][:, 1]))


def radius_neighbours(
    coords: np.ndarray, radius: float, *, sparse: bool = False
) -> list[np.ndarray] | sp.csr_matrix:
    """The spots within ``radius`` of each spot, itself included.

    Parameters
    ----------
    coords
        Spot positions (``n_spots x n_dims``).
    radius
        Distance bound (inclusive).
    sparse
        Return a binary CSR matrix instead of one index array per spot.

    Returns
    -------
    One index array per spot (in scikit-learn's order), or the ``n_spots x n_spots``
    connectivity CSR (``float64``, diagonal set).
    """
    from sklearn.neighbors import NearestNeighbors

    tree = NearestNeighbors(radius=radius).fit(coords)
    if sparse:
        return sp.csr_matrix(tree.radius_neighbors_graph(coords, mode="connectivity"))
    return list(tree.radius_neighbors(coords)[1])


def ring_neighbours(coords: np.ndarray, rings: float = 1.0) -> list[np.ndarray]:
    """Indices of the spots within ``rings`` grid steps of each spot (itself included).

    The grid step is the median nearest-neighbour distance (:func:`grid_spacing`), so one
    ring is the 6 hexagon neighbours on Visium and the 8 surrounding spots on the legacy
    ST square grid.

    Parameters
    ----------
    coords
        Spot positions (``n_spots x n_dims``).
    rings
        Radius in grid steps; spots within ``(rings + 0.5) x spacing`` count.

    Returns
    -------
    One index array per spot.
    """
    if len(coords) < 2:
        return [np.arange(len(coords))]
    return radius_neighbours(coords, grid_spacing(coords) * (rings + 0.5))


def spatial_connectivities(
    adata: AnnData, n_neighbors: int
) -> tuple[sp.csr_matrix | None, str | None]:
    """The spot graph in ``obsp["spatial_connectivities"]``, built there when missing.

    A stored graph is reused as it is (after checking its shape and weights). Without
    one, ``squidpy.gr.spatial_neighbors(coord_type="generic", n_neighs=n_neighbors)``
    builds it when squidpy is installed; otherwise :func:`knn_graph` builds the same graph
    and stores it with its distances and ``uns["spatial_neighbors"]`` as squidpy would.
    Nothing is stored on a view.

    Parameters
    ----------
    adata
        Spots with ``obsm["spatial"]`` and/or ``obsp["spatial_connectivities"]``.
    n_neighbors
        Nearest spots per spot when the graph has to be built.

    Returns
    -------
    ``(graph, source)``: the CSR ``float32`` graph as stored or built (directed, possibly
    with self loops when reused) and a sentence saying where it came from;
    ``(None, None)`` without a stored graph and without ``obsm["spatial"]``.

    Raises
    ------
    KbfmInputError
        When the stored graph's shape does not match the spots, or it holds negative,
        NaN or infinite weights.
    """
    n = adata.n_obs
    try:
        stored = adata.obsp.get(GRAPH_KEY)
    except ValueError as err:  # anndata refuses obsp entries whose shape does not fit
        msg = (
            f"obsp holds a graph whose shape does not match the {n} spots ({err}); rebuild "
            f"it (squidpy.gr.spatial_neighbors(adata)) or delete obsp[{GRAPH_KEY!r}]."
        )
        raise KbfmInputError(msg) from None
    if stored is None:
        if "spatial" not in adata.obsm:
            return None, None
        return _build(adata, n_neighbors)
    if stored.shape != (n, n):
        msg = (
            f"obsp[{GRAPH_KEY!r}] is {stored.shape}, but the data has {n} spots; rebuild it "
            f"(squidpy.gr.spatial_neighbors(adata)) or delete it to let kbfm build one."
        )
        raise KbfmInputError(msg)
    graph = sp.csr_matrix(stored, dtype=np.float32)
    if graph.nnz and (not np.isfinite(graph.data).all() or graph.data.min() < 0):
        msg = f"obsp[{GRAPH_KEY!r}] holds negative, NaN or infinite weights."
        raise KbfmInputError(msg)
    return graph, f"obsp[{GRAPH_KEY!r}] (reused)"


def _build(adata: AnnData, n_neighbors: int) -> tuple[sp.csr_matrix, str]:
    try:
        import squidpy as sq
    except ImportError:
        sq = None
    if sq is not None and not adata.is_view:
        sq.gr.spatial_neighbors(adata, coord_type="generic", n_neighs=n_neighbors)
        return sp.csr_matrix(adata.obsp[GRAPH_KEY], dtype=np.float32), (
            f"squidpy.gr.spatial_neighbors(n_neighs={n_neighbors}) -> obsp[{GRAPH_KEY!r}]"
        )
    conn, dists = knn_graph(np.asarray(adata.obsm["spatial"], dtype=np.float64), n_neighbors)
    source = f"{n_neighbors} nearest spots (scikit-learn; squidpy not installed)"
    if adata.is_view:
        log.info("Spot graph: %s, not stored (the AnnData is a view).", source)
        return conn, source
    adata.obsp[GRAPH_KEY] = conn
    adata.obsp[DISTANCES_KEY] = dists
    adata.uns["spatial_neighbors"] = {
        "connectivities_key": GRAPH_KEY,
        "distances_key": DISTANCES_KEY,
        "params": {"n_neighbors": n_neighbors, "coord_type": "generic", "built_by": "kbfm"},
    }
    log.info("Spot graph: %s -> obsp[%r].", source, GRAPH_KEY)
    return conn, source + f" -> obsp[{GRAPH_KEY!r}]"
