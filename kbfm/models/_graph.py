"""The spot graph FusionModel mixes over, kept sparse, and the neighbourhoods of spot batches.

The graph lives where squidpy puts it (``obsp["spatial_connectivities"]``): reused when
present, otherwise built once and written there
(:func:`kbfm._spatial_graph.spatial_connectivities`).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from .._spatial_graph import spatial_connectivities


def spot_graph(adata: AnnData, n_neighbors: int) -> tuple[sp.csr_matrix | None, str | None]:
    """Return the row-normalised, symmetric spot adjacency and where it came from.

    Parameters
    ----------
    adata
        Spots with ``obsm["spatial"]`` (and possibly ``obsp["spatial_connectivities"]``).
    n_neighbors
        Nearest spots per spot when the graph has to be built.

    Returns
    -------
    ``(adjacency, source)``: CSR with rows summing to 1 (isolated spots: empty rows) and
    no self loops; ``source`` says whether ``obsp`` was reused or how the graph was built.
    ``(None, None)`` without a stored graph and without ``obsm["spatial"]``.
    """
    graph, source = spatial_connectivities(adata, n_neighbors)
    if graph is None:
        return None, None
    graph = graph.maximum(graph.T).tocsr()
    graph.setdiag(0)
    graph.eliminate_zeros()
    return row_normalise(graph), source


def row_normalise(graph: sp.csr_matrix) -> sp.csr_matrix:
    """Divide each row by its sum (empty rows stay empty)."""
    degree = np.asarray(graph.sum(1)).ravel()
    return sp.csr_matrix(sp.diags(1.0 / np.maximum(degree, 1e-12)) @ graph, dtype=np.float32)


def neighbourhood(graph: sp.csr_matrix, seeds: np.ndarray, hops: int) -> np.ndarray:
    """The seeds followed by every spot within ``hops`` steps of them (each once).

    With ``hops`` rounds of neighbour averaging, the seeds' mixed latents computed on this
    subgraph equal those computed on the whole graph.
    """
    seen = np.zeros(graph.shape[0], dtype=bool)
    seen[seeds] = True
    parts, frontier = [np.asarray(seeds)], np.asarray(seeds)
    for _ in range(hops):
        if frontier.size == 0:
            break
        nbrs = np.unique(graph[frontier].indices)
        frontier = nbrs[~seen[nbrs]]
        seen[frontier] = True
        parts.append(frontier)
    return np.concatenate(parts)


def spatial_tiles(
    coords: np.ndarray, batch_size: int, rng: np.random.Generator | None = None
) -> list[np.ndarray]:
    """Split spots into compact tiles of at most ``batch_size`` spots.

    Tiles are contiguous in space, so a tile's neighbourhood adds only its border. With
    ``rng`` the grid is rotated by a random angle and the tiles come in random order
    (a new partition every epoch); without, the partition is fixed (for inference).
    """
    n = len(coords)
    if batch_size >= n:
        return [np.arange(n)]
    u, v = coords[:, 0].astype(np.float64), coords[:, 1].astype(np.float64)
    if rng is not None:
        angle = rng.uniform(0.0, math.pi)
        u, v = math.cos(angle) * u - math.sin(angle) * v, math.sin(angle) * u + math.cos(angle) * v
    n_strips = math.ceil(math.sqrt(math.ceil(n / batch_size)))
    tiles = []
    for band in np.array_split(np.argsort(u, kind="stable"), n_strips):
        strip = band[np.argsort(v[band], kind="stable")]
        tiles += np.array_split(strip, math.ceil(len(strip) / batch_size))
    if rng is not None:
        tiles = [tiles[i] for i in rng.permutation(len(tiles))]
    return tiles


def torch_adjacency(graph: sp.csr_matrix, device):
    """A scipy sparse matrix as a coalesced torch sparse COO tensor on ``device``."""
    import torch

    coo = graph.tocoo()
    idx = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    values = torch.from_numpy(coo.data.astype(np.float32))
    return (
        torch.sparse_coo_tensor(idx, values, coo.shape, check_invariants=False)
        .coalesce()
        .to(device)
    )
