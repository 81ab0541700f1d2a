"""Marker-score baseline: ``scanpy.tl.score_genes`` over curated marker sets."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from anndata import AnnData

from ..._errors import KbfmInputError
from ..._keys import CELLTYPE_KEY
from ..._scale import looks_like_counts
from ._inputs import prepare_inputs, write_scores


def marker_score_matrix(
    X,
    gene_names: Sequence[str],
    cell_type_ids: Sequence[str],
    *,
    ontology,
    species: str = "human",
    seed: int = 0,
) -> tuple[np.ndarray, list[str]]:
    """Score every cell for every cell type's markers with ``scanpy.tl.score_genes``.

    Counts are library-size normalised and log1p-transformed first; log values are used
    as they are. Marker genes are matched to ``gene_names`` case-insensitively.

    Parameters
    ----------
    X
        Expression, cells x genes (dense or sparse, non-negative).
    gene_names
        Column names of ``X``.
    cell_type_ids
        Cell Ontology ids to score.
    ontology
        A :class:`~kbfm.knowledge.CellOntology`.
    species
        Marker species.
    seed
        Seed for the reference-gene sampling of ``score_genes``.

    Returns
    -------
    ``(scores, ids)``: cells x cell types, and the ids of the columns (cell types with no
    marker in the data are scored ``-inf``).
    """
    import scanpy as sc

    from ..._expression import log_normalise
    from ...knowledge import marker_sets

    tmp = AnnData(log_normalise(X) if looks_like_counts(X) else X.astype(np.float32))
    upper = [str(g).upper() for g in gene_names]
    tmp.var_names = upper
    tmp.var_names_make_unique()
    markers = marker_sets(species=species, cell_types=list(cell_type_ids), ontology=ontology)
    present = set(tmp.var_names)
    scores = np.full((tmp.n_obs, len(cell_type_ids)), -np.inf, dtype=np.float64)
    n_scored = 0
    # scanpy draws control genes from 25 expression bins of 50 genes each by default;
    # a small panel has too few genes per bin, so shrink both.
    n_bins = int(min(25, max(2, tmp.n_vars // 20)))
    for j, cid in enumerate(cell_type_ids):
        genes = sorted({g.upper() for g in markers.get(cid, [])} & present)
        if not genes:
            continue
        ctrl_size = int(min(50, max(1, tmp.n_vars - len(genes))))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sc.tl.score_genes(
                    tmp,
                    genes,
                    score_name="_score",
                    random_state=seed,
                    use_raw=False,
                    n_bins=n_bins,
                    ctrl_size=ctrl_size,
                )
        except (RuntimeError, ZeroDivisionError) as err:  # scanpy: no control genes
            msg = (
                f"Marker scoring needs control genes besides the markers, but the data has "
                f"only {tmp.n_vars} genes ({err}). Use method='zero_shot' for small panels."
            )
            raise KbfmInputError(msg) from None
        scores[:, j] = tmp.obs["_score"].to_numpy()
        n_scored += 1
    if n_scored == 0:
        msg = "None of the candidate cell types has a marker gene among the data's genes."
        raise KbfmInputError(msg)
    return scores, list(cell_type_ids)


def annotate_marker_score(
    adata: AnnData,
    *,
    candidates: object = "auto",
    groupby: str | None = None,
    layer: str | None = None,
    use_raw: bool = False,
    species: str = "auto",
    tissue: str | None = None,
    key_added: str = CELLTYPE_KEY,
    copy: bool = False,
) -> AnnData | None:
    """Annotate cells (or clusters) with the cell type whose curated markers score highest.

    The classic baseline: ``scanpy.tl.score_genes`` on each candidate's marker genes
    (see :func:`marker_score_matrix`), highest score wins. ``annotate(method=
    "marker_score")`` calls this function.

    Parameters
    ----------
    adata
        Non-negative log-normalised expression (or counts) in ``X``, a layer or ``raw``.
    candidates
        ``"auto"``, an ontology branch, ``None`` (every type with markers) or a list of
        ids/labels, as in :func:`kbfm.tl.annotate_zero_shot`.
    groupby
        Annotate groups instead of cells: an ``obs`` column, or ``"auto"`` for Leiden
        clusters computed here (stored in ``obs["kbfm_clusters"]``); a group's score
        is the mean over its cells.
    layer, use_raw
        Where to read expression (see :func:`kbfm.tl.annotate_zero_shot`).
    species
        Marker species; ``"auto"``: detected from the gene names.
    tissue
        Tissue of the sample: chooses the ``candidates="auto"`` lineages.
    key_added
        Prefix of the ``obs`` keys written.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the copy when ``copy=True``. Writes ``obs[key_added]`` (label),
    ``obs[key_added + "_id"]`` (CL id), ``obs[key_added + "_score"]`` (marker score of
    the winner), ``obsm[key_added + "_scores"]`` (all candidates) and
    ``uns["kbfm"]["annotate"]``.

    Examples
    --------
    >>> import scanpy as sc, kbfm
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> kbfm.tl.annotate_marker_score(adata, use_raw=True, candidates="hematopoietic cell")
    >>> adata.obs["kbfm_celltype"].value_counts().index[0]  # doctest: +SKIP
    """
    inputs = prepare_inputs(
        adata,
        method="marker_score",
        candidates=candidates,
        groupby=groupby,
        layer=layer,
        use_raw=use_raw,
        species=species,
        tissue=tissue,
    )
    scores, label_ids = marker_score_matrix(
        inputs.X,
        inputs.names,
        inputs.candidate_ids,
        ontology=inputs.ontology,
        species=inputs.species,
    )
    inputs.params["markers"] = "kbfm curated marker table"
    return write_scores(adata, scores, label_ids, inputs, key_added=key_added, copy=copy)
