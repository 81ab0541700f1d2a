"""``FusionModel.setup_anndata``: register the data a FusionModel reads (scvi-tools style).

The registration is a small, h5ad-safe record in ``adata.uns["_kbfm_fusion_setup"]``
(strings, numbers, booleans, string and float arrays; no ``None``): where expression is
read from, how the model's genes were chosen and which genes they are, their
log-normalised means and scales (the model's input standardisation), the optional
``obsm`` views and their widths, and a fingerprint of the data it was computed on. It
travels with the AnnData (``write_h5ad`` keeps it) and is checked again when a model
is built on it.
"""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from .._errors import KbfmInputError, preview
from .._expression import log_normalised as _log_normalised
from .._keys import CELL_TEXT_KEY, IMAGE_KEY, SETUP_KEY
from .._validate import expression_matrix
from .._version import __version__

GENE_SELECTIONS = ("auto", "spatial", "hvg")
VIEW_KEYS = (CELL_TEXT_KEY, IMAGE_KEY)
MIN_SPOTS = 20


def resolve_gene_selection(adata: AnnData, gene_selection: str) -> str:
    """``"spatial"`` or ``"hvg"`` for ``gene_selection`` (``"auto"``: spatial with coordinates)."""
    if gene_selection not in GENE_SELECTIONS:
        msg = f"gene_selection must be 'auto', 'spatial' or 'hvg', got {gene_selection!r}."
        raise KbfmInputError(msg)
    if gene_selection == "auto":
        gene_selection = "spatial" if "spatial" in adata.obsm else "hvg"
    if gene_selection == "spatial" and "spatial" not in adata.obsm:
        msg = "gene_selection='spatial' needs obsm['spatial'] (spot coordinates)."
        raise KbfmInputError(msg)
    return gene_selection


def setup_anndata(
    adata: AnnData,
    *,
    layer: str | None = None,
    n_top_genes: int = 2000,
    gene_selection: str = "auto",
    use_genetext: bool = True,
    use_image: bool = True,
    n_neighbors: int = 6,
) -> dict:
    """Check ``adata``, choose the model's genes and store the record in ``adata.uns``.

    Parameters are those of :meth:`kbfm.models.FusionModel.setup_anndata`.

    Returns
    -------
    The record written to ``adata.uns["_kbfm_fusion_setup"]``.
    """
    import scanpy as sc

    gene_selection = resolve_gene_selection(adata, gene_selection)
    X, names = expression_matrix(adata, layer=layer)
    if adata.n_obs < MIN_SPOTS:
        msg = (
            f"FusionModel needs at least {MIN_SPOTS} spots for a validation split, "
            f"got {adata.n_obs}."
        )
        raise KbfmInputError(msg)
    logn, counts = _log_normalised(X)
    tmp = AnnData(logn)
    tmp.var_names = [str(n) for n in names]
    n_top = min(n_top_genes, tmp.n_vars)
    if gene_selection == "spatial":
        from ..pp.spatially_variable import morans_i_of_matrix, top_gene_flags

        coords = np.asarray(adata.obsm["spatial"], dtype=np.float64)
        flags = top_gene_flags(morans_i_of_matrix(logn, coords, n_neighbors), n_top)
    else:
        sc.pp.highly_variable_genes(tmp, n_top_genes=n_top, flavor="seurat")
        flags = tmp.var["highly_variable"].to_numpy()
    genes = list(tmp.var_names[flags])
    values = tmp[:, genes].X
    mean, std = values.mean(0), values.std(0) + 1e-6
    views = {
        key: int(adata.obsm[key].shape[1])
        for key, on in zip(VIEW_KEYS, (use_genetext, use_image), strict=True)
        if on and key in adata.obsm
    }
    record = {
        "genes": np.asarray(genes, dtype=object),
        "gene_mean": np.asarray(mean),
        "gene_std": np.asarray(std),
        "gene_selection": gene_selection,
        "n_top_genes": int(n_top_genes),
        "n_neighbors": int(n_neighbors),
        "use_genetext": bool(use_genetext),
        "use_image": bool(use_image),
        "views": views,
        "input_was_counts": bool(counts),
        "n_obs": int(adata.n_obs),
        "n_vars": int(adata.n_vars),
        "kbfm_version": __version__,
    }
    if layer is not None:
        record["layer"] = str(layer)
    adata.uns[SETUP_KEY] = record
    return record


def read_setup(adata: AnnData) -> dict:
    """Return the record of :func:`setup_anndata` after checking it still fits ``adata``.

    Raises
    ------
    KbfmInputError
        When ``adata`` was never set up, or its spots or the registered genes changed
        since.
    """
    record = adata.uns.get(SETUP_KEY)
    if not isinstance(record, dict) or "genes" not in record:
        msg = (
            f"adata is not set up for FusionModel (no adata.uns[{SETUP_KEY!r}]): call "
            "FusionModel.setup_anndata(adata, ...) first, or FusionModel.setup(adata, ...) "
            "to set up and build in one step."
        )
        raise KbfmInputError(msg)
    genes = [str(g) for g in record["genes"]]
    if int(record["n_obs"]) != adata.n_obs:
        msg = (
            f"adata.uns[{SETUP_KEY!r}] was computed on {int(record['n_obs']):,} spots, this "
            f"data has {adata.n_obs:,}: call FusionModel.setup_anndata(adata) again."
        )
        raise KbfmInputError(msg)
    present = set(map(str, adata.var_names))
    gone = [g for g in genes if g not in present]
    if gone:
        msg = (
            f"{len(gone)} of the {len(genes)} genes registered by setup_anndata are no longer "
            f"in adata.var_names (e.g. {preview(gone)}): call "
            "FusionModel.setup_anndata(adata) again."
        )
        raise KbfmInputError(msg)
    layer = record.get("layer")
    if layer is not None and layer not in adata.layers:
        msg = (
            f"setup_anndata registered layer {layer!r}, which adata.layers no longer holds; "
            f"available: {list(adata.layers)}."
        )
        raise KbfmInputError(msg)
    return {**record, "genes": genes, "layer": layer, "views": dict(record.get("views", {}))}
