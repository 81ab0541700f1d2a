"""Reference mode: the reference's cell-type signatures on the genes it shares with the spots."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from ..._errors import KbfmInputError
from ..._validate import check_adata
from ._inputs import check_labels, counts_matrix, informative_genes, match_genes, type_means

logger = logging.getLogger(__name__)


def dense(X) -> np.ndarray:
    """``X`` as a dense float array."""
    return X.toarray().astype(float) if sp.issparse(X) else np.asarray(X, dtype=float)


@dataclass(frozen=True)
class ReferenceOptions:
    """The options that say how a labelled reference becomes signatures.

    ``deconvolve_nnls``, ``deconvolve_poisson`` and ``deconvolve_knowledge`` take them
    as keywords (documented there) and pass them on together.
    """

    label_key: str = "cell_type"
    reference_layer: str | None = None
    species: str = "auto"
    reference_species: str = "auto"
    genes: Sequence[str] | None = None
    n_genes_per_type: int = 100
    min_cells_per_type: int = 2


def require_reference(reference: AnnData | None, method: str) -> None:
    """Refuse ``reference=None`` for a method that needs a reference."""
    if reference is None:
        msg = (
            f"method={method!r} needs reference= (a labelled single-cell AnnData). Without "
            "a reference use method='knowledge' with cell_types=[...] (zero-shot)."
        )
        raise KbfmInputError(msg)


@dataclass
class ReferenceSignatures:
    """Signatures, the genes they use and the spot counts on those genes."""

    R: object
    """Reference counts on the shared genes, cells x shared genes."""
    S_shared: np.ndarray
    """Mean counts per cell of each type on every shared gene."""
    shared: list[str]
    """Names of the shared genes."""
    sel: np.ndarray
    """Selected genes, as positions in ``shared``."""
    S: np.ndarray
    """Signatures on the selected genes, types x genes."""
    Y: np.ndarray
    """Spot counts on the selected genes, spots x genes."""
    types: list[str]
    used_idx: np.ndarray
    """Selected genes, as positions in the spots' ``var``."""
    species: str
    params: dict
    """Provenance: scales, cells per type, gene matching."""


def reference_signatures(
    reference: AnnData, Y_all, spatial_names: list[str], options: ReferenceOptions
) -> ReferenceSignatures:
    """Check the reference, match its genes to the spots' and pick informative genes."""
    label_key, reference_layer = options.label_key, options.reference_layer
    genes, n_genes_per_type = options.genes, options.n_genes_per_type
    check_adata(reference)
    labels_ref = check_labels(reference, label_key, options.min_cells_per_type)
    R, ref_names, ref_kind = counts_matrix(
        reference, layer=reference_layer, what="reference", need_counts=False
    )
    match = match_genes(
        spatial_names,
        ref_names,
        species=options.species,
        reference_species=options.reference_species,
    )
    R = sp.csr_matrix(R)[:, match.reference_idx] if sp.issparse(R) else R[:, match.reference_idx]
    shared = match.names
    if genes is not None:
        pos = {g: i for i, g in enumerate(shared)}
        missing = [g for g in genes if g not in pos]
        if missing:
            msg = f"{len(missing)} genes in genes= are not shared: {missing[:5]}."
            raise KbfmInputError(msg)
        sel = np.array([pos[g] for g in genes], dtype=int)
    else:
        sel = informative_genes(R, labels_ref, n_per_type=n_genes_per_type)
        if len(sel) < 10:
            logger.warning("Only %d informative genes; using all %d shared.", len(sel), len(shared))
            sel = np.arange(len(shared))
    S_shared, types, n_cells = type_means(R, labels_ref)
    sel = sel[S_shared[:, sel].sum(axis=0) > 0]
    used_idx = match.spatial_idx[sel]
    params = {
        "mode": "reference",
        "reference_scale": ref_kind,
        "reference_layer": reference_layer,
        "cells_per_type": dict(zip(types, n_cells.astype(int).tolist(), strict=True)),
        "gene_match": match.summary(),
        "n_genes_spatial": len(spatial_names),
        "n_genes_reference": len(ref_names),
    }
    return ReferenceSignatures(
        R=R,
        S_shared=S_shared,
        shared=shared,
        sel=sel,
        S=S_shared[:, sel],
        Y=dense(Y_all[:, used_idx]),
        types=types,
        used_idx=used_idx,
        species=match.species,
        params=params,
    )
