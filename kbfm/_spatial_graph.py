"""Spot neighbourhood graphs shared by the spatial tools (kNN on ``obsm['spatial']``)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def spatial_knn_graph(coords: np.ndarray, n_neighbors: int) -> sp.csr_matrix:
    """Binary symmetric kNN graph of spots (CSR, no self loops)."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=min(n_neighbors + 1, len(coords))).fit(coords)
    graph = nn.kneighbors_graph(coords, mode="connectivity")
    graph.setdiag(0)
    graph.eliminate_zeros()
    return sp.csr_matrix(((graph + graph.T) > 0).astype(np.float32))


def spatial_adjacency(coords: np.ndarray, n_neighbors: int) -> sp.csr_matrix:
    """Row-normalised symmetric kNN adjacency of spots (scipy CSR, no self loops)."""
    graph = spatial_knn_graph(coords, n_neighbors)
    degree = np.asarray(graph.sum(1)).ravel()
    return sp.csr_matrix(sp.diags(1.0 / np.maximum(degree, 1)) @ graph)
