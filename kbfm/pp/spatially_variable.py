"""Spatially variable genes: Moran's I of each gene over the spot neighbourhood graph."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from anndata import AnnData

from .._errors import KbfmInputError
from .._expression import log_normalised
from .._keys import MORANS_I_KEY, SVG_KEY
from .._provenance import record_step
from .._spatial_graph import spatial_knn_graph
from .._validate import expression_matrix
from ..io._spatial import spatial_coords


def morans_i_of_matrix(logn: np.ndarray, coords: np.ndarray, n_neighbors: int) -> np.ndarray:
    """Moran's I of each column of a dense log-normalised ``spots x genes`` matrix."""
    import scanpy as sc

    graph = spatial_knn_graph(coords, n_neighbors)
    with warnings.catch_warnings():  # constant genes -> NaN, as documented in morans_i
        warnings.filterwarnings("ignore", message=".*variables were constant.*")
        return np.asarray(sc.metrics.morans_i(graph, logn.T), dtype=np.float64)


def top_gene_flags(scores: np.ndarray, n_top_genes: int) -> np.ndarray:
    """Boolean mask of the ``n_top_genes`` highest scores (NaN ranks last, ties stable)."""
    ranked = np.where(np.isnan(scores), -np.inf, scores)
    flags = np.zeros(len(ranked), dtype=bool)
    flags[np.argsort(-ranked, kind="stable")[: min(n_top_genes, len(ranked))]] = True
    return flags


def morans_i(adata: AnnData, *, n_neighbors: int = 6, layer: str | None = None) -> pd.Series:
    """Moran's I of every gene's log-normalised expression over the spot kNN graph.

    Computed with :func:`scanpy.metrics.morans_i`; constant genes get ``NaN``.

    Parameters
    ----------
    adata
        Spots with ``obsm['spatial']``; counts or normalised values.
    n_neighbors
        Spatial neighbours per spot (6 suits the Visium hexagonal grid).
    layer
        Read expression from this layer.

    Returns
    -------
    Series indexed by gene.
    """
    X, names = expression_matrix(adata, layer=layer)
    coords = spatial_coords(adata)
    logn, _ = log_normalised(X)
    values = morans_i_of_matrix(logn, coords, n_neighbors)
    return pd.Series(values, index=[str(n) for n in names], name=MORANS_I_KEY)


def spatially_variable_genes(
    adata: AnnData,
    *,
    n_top_genes: int = 2000,
    n_neighbors: int = 6,
    layer: str | None = None,
    inplace: bool = True,
) -> pd.DataFrame | None:
    """Flag the genes whose expression is most spatially autocorrelated (Moran's I).

    Layered or zoned tissue (cortex layers, tumour/stroma) is better told apart by genes
    that vary *in space* than by genes that merely vary: on DLPFC 151675 domains found
    from the top 2,000 genes by Moran's I beat the top 2,000 highly variable genes
    (``benchmarks/RESULTS.md``). :class:`kbfm.models.FusionModel` uses this selection
    by default when spot coordinates are present.

    Parameters
    ----------
    adata
        Spots with ``obsm['spatial']``; counts or normalised values.
    n_top_genes
        Genes flagged as spatially variable (at most the number of genes).
    n_neighbors
        Spatial neighbours per spot.
    layer
        Read expression from this layer.
    inplace
        Write ``var`` columns (``True``) or return them as a DataFrame.

    Returns
    -------
    ``None`` or a DataFrame with ``var['kbfm_morans_i']`` (float) and
    ``var['kbfm_spatially_variable']`` (bool). Provenance in
    ``uns['kbfm']['spatially_variable_genes']``.

    Examples
    --------
    >>> import kbfm
    >>> adata = kbfm.datasets.synthetic_spatial(n_side=20, n_genes=60, seed=0)
    >>> kbfm.pp.spatially_variable_genes(adata, n_top_genes=20)
    >>> int(adata.var["kbfm_spatially_variable"].sum())
    20
    """
    if n_top_genes < 1:
        msg = f"n_top_genes must be >= 1, got {n_top_genes}."
        raise KbfmInputError(msg)
    scores = morans_i(adata, n_neighbors=n_neighbors, layer=layer)
    flags = top_gene_flags(scores.to_numpy(), n_top_genes)
    table = pd.DataFrame(
        {MORANS_I_KEY: scores.to_numpy(), SVG_KEY: flags}, index=adata.var_names.copy()
    )
    if not inplace:
        return table
    adata.var[MORANS_I_KEY] = table[MORANS_I_KEY].to_numpy()
    adata.var[SVG_KEY] = flags
    record_step(
        adata,
        "spatially_variable_genes",
        n_top_genes=int(flags.sum()),
        n_neighbors=n_neighbors,
        layer=layer,
        statistic="Moran's I (scanpy.metrics.morans_i) on log-normalised expression",
    )
    return None
