"""kbfm._spatial_graph: the one module that finds spatial neighbours."""

from __future__ import annotations

import sys

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.neighbors import NearestNeighbors

from kbfm._errors import KbfmInputError
from kbfm._spatial_graph import (
    DISTANCES_KEY,
    GRAPH_KEY,
    grid_spacing,
    kneighbors,
    knn_graph,
    radius_neighbours,
    ring_neighbours,
    spatial_adjacency,
    spatial_connectivities,
    spatial_knn_graph,
)


def _grid(n: int, step: float = 2.0) -> np.ndarray:
    return np.array([[x, y] for x in range(n) for y in range(n)], dtype=float) * step


def _jittered(n: int = 60, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 100, size=(n, 2))


def test_kneighbors_with_and_without_self():
    coords = _jittered()
    dist, idx = kneighbors(coords, 5, include_self=True)
    assert idx.shape == dist.shape == (60, 6)
    np.testing.assert_array_equal(idx[:, 0], np.arange(60))
    np.testing.assert_array_equal(dist[:, 0], 0.0)
    assert (np.diff(dist, axis=1) >= 0).all()
    dist_x, idx_x = kneighbors(coords, 5, include_self=False)
    assert idx_x.shape == (60, 5)
    assert not (idx_x == np.arange(60)[:, None]).any()
    # without duplicate positions both conventions find the same neighbours
    np.testing.assert_array_equal(idx_x, idx[:, 1:])
    np.testing.assert_allclose(dist_x, dist[:, 1:])
    # squidpy's generic kNN is NearestNeighbors(n_neighs).fit(coords).kneighbors()
    squidpy_idx = NearestNeighbors(n_neighbors=5).fit(coords).kneighbors()[1]
    np.testing.assert_array_equal(idx_x, squidpy_idx)
    # capped by the number of spots
    assert kneighbors(coords[:4], 10)[1].shape == (4, 4)
    assert kneighbors(coords[:4], 10, include_self=False)[1].shape == (4, 3)


def test_knn_graph_is_directed_and_self_free():
    coords = _jittered()
    conn, dists = knn_graph(coords, 6)
    assert conn.shape == dists.shape == (60, 60)
    assert conn.dtype == dists.dtype == np.float32
    np.testing.assert_array_equal(np.diff(conn.indptr), 6)
    assert conn.diagonal().sum() == 0
    np.testing.assert_array_equal(conn.data, 1.0)
    d, i = kneighbors(coords, 6, include_self=False)
    np.testing.assert_allclose(dists[0, i[0]].toarray().ravel(), d[0], rtol=1e-6)


def test_spatial_knn_graph_and_adjacency():
    coords = _jittered()
    graph = spatial_knn_graph(coords, 6)
    assert (graph != graph.T).nnz == 0
    assert graph.diagonal().sum() == 0
    assert set(np.unique(graph.data)) == {1.0}
    assert (np.diff(graph.indptr) >= 6).all()
    conn, _ = knn_graph(coords, 6)  # same graph as squidpy's, symmetrised
    np.testing.assert_array_equal(graph.toarray(), conn.maximum(conn.T).toarray())
    adjacency = spatial_adjacency(coords, 6)
    np.testing.assert_allclose(np.asarray(adjacency.sum(1)).ravel(), 1.0)
    np.testing.assert_array_equal(adjacency.toarray() > 0, graph.toarray() > 0)


def test_radius_and_ring_neighbours():
    coords = _grid(5)
    assert grid_spacing(coords) == pytest.approx(2.0)
    assert grid_spacing(coords[:1]) == 0.0
    rows = radius_neighbours(coords, 2.0)
    assert sorted(rows[12]) == [7, 11, 12, 13, 17]  # centre: itself + 4 at distance 2
    csr = radius_neighbours(coords, 2.0, sparse=True)
    assert sp.issparse(csr) and csr.shape == (25, 25)
    for i, row in enumerate(rows):
        np.testing.assert_array_equal(np.sort(csr[i].indices), np.sort(row))
    ring = ring_neighbours(coords)  # radius 1.5 steps: the 8 surrounding spots
    assert len(ring[12]) == 9 and len(ring[0]) == 4
    assert len(ring_neighbours(coords, 2.0)[12]) == 21  # within 2.5 steps
    assert [list(r) for r in ring_neighbours(coords[:1])] == [[0]]


def test_spatial_connectivities_builds_stores_and_reuses(monkeypatch):
    monkeypatch.setitem(sys.modules, "squidpy", None)  # the scikit-learn path, always
    coords = _jittered()
    adata = ad.AnnData(np.zeros((60, 1)), obsm={"spatial": coords})
    graph, source = spatial_connectivities(adata, 6)
    assert "scikit-learn" in source and GRAPH_KEY in source
    conn, dists = knn_graph(coords, 6)
    np.testing.assert_array_equal(graph.toarray(), conn.toarray())
    np.testing.assert_array_equal(adata.obsp[GRAPH_KEY].toarray(), conn.toarray())
    np.testing.assert_allclose(adata.obsp[DISTANCES_KEY].toarray(), dists.toarray())
    assert adata.uns["spatial_neighbors"]["params"]["n_neighbors"] == 6
    # stored: reused as is, whatever n_neighbors now asks
    again, source = spatial_connectivities(adata, 3)
    assert source == f"obsp[{GRAPH_KEY!r}] (reused)"
    np.testing.assert_array_equal(again.toarray(), conn.toarray())
    # a view gets a graph but nothing is written to it
    view = ad.AnnData(np.zeros((60, 1)), obsm={"spatial": coords})[:30]
    part, source = spatial_connectivities(view, 4)
    assert part.shape == (30, 30) and "->" not in source and GRAPH_KEY not in view.obsp
    # nothing to build from
    assert spatial_connectivities(ad.AnnData(np.zeros((5, 1))), 6) == (None, None)


def test_spatial_connectivities_refuses_bad_stored_graphs():
    adata = ad.AnnData(np.zeros((6, 1)), obsm={"spatial": _grid(3)[:6]})
    adata._obsp[GRAPH_KEY] = sp.eye(5, format="csr")  # bypass anndata's own check
    with pytest.raises(KbfmInputError, match="does not match the 6 spots"):
        spatial_connectivities(adata, 3)
    adata = ad.AnnData(np.zeros((6, 1)), obsm={"spatial": _grid(3)[:6]})
    adata.obsp[GRAPH_KEY] = -sp.eye(6, format="csr")
    with pytest.raises(KbfmInputError, match="negative, NaN or infinite"):
        spatial_connectivities(adata, 3)
