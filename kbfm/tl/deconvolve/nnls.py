"""Signature non-negative least squares: the baseline deconvolution."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from anndata import AnnData

from ..._validate import check_adata
from ._inputs import counts_matrix
from ._reference import ReferenceOptions, reference_signatures, require_reference
from ._result import PROPORTIONS_KEY, write_proportions


def nnls_proportions(Y: np.ndarray, S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve ``min ||S.T w - y||`` with ``w >= 0`` for every spot.

    Parameters
    ----------
    Y
        Spot counts on the selected genes, ``(n_spots, n_genes)``.
    S
        Cell-type signatures (mean counts per cell), ``(n_types, n_genes)``.

    Returns
    -------
    ``(proportions, weights)``: weights are the fitted numbers of "average cells" of each
    type; proportions are the weights divided by their sum (uniform for an empty spot).
    """
    from scipy.optimize import nnls

    A = np.asarray(S, dtype=float).T
    W = np.zeros((Y.shape[0], S.shape[0]))
    for i, y in enumerate(np.asarray(Y, dtype=float)):
        W[i], _ = nnls(A, y)
    total = W.sum(axis=1, keepdims=True)
    P = np.where(total > 0, W / np.where(total > 0, total, 1.0), 1.0 / S.shape[0])
    return P, W


def deconvolve_nnls(
    adata: AnnData,
    reference: AnnData,
    *,
    label_key: str = "cell_type",
    layer: str | None = None,
    reference_layer: str | None = None,
    species: str = "auto",
    reference_species: str = "auto",
    genes: Sequence[str] | None = None,
    n_genes_per_type: int = 100,
    min_cells_per_type: int = 2,
    key_added: str = PROPORTIONS_KEY,
    copy: bool = False,
) -> AnnData | None:
    """Cell-type proportions per spot by non-negative least squares: the baseline.

    Each spot's counts are fitted as a non-negative mix of the reference signatures
    (mean counts per cell of each type) over informative genes (see
    :func:`nnls_proportions`). ``deconvolve(method="nnls")`` calls this function.

    Parameters
    ----------
    adata
        Spatial data, spots x genes, counts (or normalised values) in ``X`` or ``layer``.
    reference
        Labelled single-cell reference (cells x genes).
    label_key
        ``reference.obs`` column with cell-type labels.
    layer, reference_layer
        Layers with raw counts.
    species, reference_species
        ``"human"``, ``"mouse"`` or ``"auto"`` (from the symbols); when they differ, genes
        are mapped through orthologs.
    genes
        Use exactly these genes instead of the informative genes of the reference.
    n_genes_per_type
        Informative genes picked per cell type.
    min_cells_per_type
        Refuse reference types with fewer cells.
    key_added
        ``obsm`` key of the proportions.
    copy
        Work on a copy and return it.

    Returns
    -------
    ``None`` (or a copy). Writes ``obsm[key_added]``: DataFrame spots x cell types (rows
    sum to 1), ``var[f"{key_added}_used"]`` (genes used), and parameters, gene matching
    report and genes used in ``uns["kbfm"]["deconvolve"]``.

    Examples
    --------
    >>> import kbfm
    >>> kbfm.tl.deconvolve_nnls(spots, cells, label_key="cell_type")  # doctest: +SKIP
    >>> spots.obsm["kbfm_proportions"].head()  # doctest: +SKIP
    """
    check_adata(adata)
    options = ReferenceOptions(
        label_key=label_key,
        reference_layer=reference_layer,
        species=species,
        reference_species=reference_species,
        genes=genes,
        n_genes_per_type=n_genes_per_type,
        min_cells_per_type=min_cells_per_type,
    )
    require_reference(reference, "nnls")
    Y_all, sp_names, sp_kind = counts_matrix(adata, layer=layer, what="spatial", need_counts=False)
    params = {
        "method": "nnls",
        "label_key": label_key,
        "spatial_layer": layer,
        "spatial_scale": sp_kind,
    }
    ref = reference_signatures(reference, Y_all, sp_names, options)
    params.update(ref.params)
    P, _ = nnls_proportions(ref.Y, ref.S)
    return write_proportions(
        adata,
        P,
        types=ref.types,
        used_idx=ref.used_idx,
        Y=ref.Y,
        spatial_names=sp_names,
        fit=None,
        params=params,
        key_added=key_added,
        copy=copy,
    )
