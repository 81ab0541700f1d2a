"""``kbfm.tl.annotate``: cell-type annotation against the Cell Ontology."""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._errors import KbfmInputError, closest_names
from .._provenance import record_step
from .._validate import check_adata
from ..encoders import DEFAULT_TEXT_ENCODER, TextEncoder, get_text_encoder
from ..knowledge._gene_vectors import gene_vectors
from ..knowledge.gene_descriptions import DEFAULT_GENE_KNOWLEDGE
from ..knowledge.species import resolve_species
from ._candidates import needs_data
from ._candidates import resolve_candidates as resolve_candidates_full
from ._expression import log_expression
from ._prototypes import build_prototypes
from .annotate_markers import marker_score_matrix
from .embed_cells import _genept_w

logger = logging.getLogger(__name__)

CELLTYPE_KEY = "kbfm_celltype"
#: Below this share of genes with knowledge, annotate warns.
MIN_KNOWLEDGE_SHARE = 0.2
AUTO_CLUSTER_KEY = "kbfm_clusters"
METHODS = ("zero_shot", "marker_score", "llm")


def auto_clusters(X, *, resolution: float = 1.0, seed: int = 0) -> np.ndarray:
    """Leiden clusters of log-normalised expression (PCA 30 -> kNN 15), as strings."""
    import scanpy as sc

    tmp = AnnData(X.astype(np.float32))
    sc.pp.pca(tmp, n_comps=min(30, min(tmp.shape) - 1), random_state=seed)
    sc.pp.neighbors(tmp, n_neighbors=15, random_state=seed)
    sc.tl.leiden(
        tmp,
        resolution=resolution,
        random_state=seed,
        flavor="igraph",
        n_iterations=2,
        directed=False,
    )
    return tmp.obs["leiden"].astype(str).to_numpy()


def _centered(x: np.ndarray) -> np.ndarray:
    out = x - x.mean(axis=0, keepdims=True)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def _group_mean(values: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniq, inverse = np.unique(groups, return_inverse=True)
    sums = np.zeros((len(uniq), values.shape[1]), dtype=np.float64)
    np.add.at(sums, inverse, values)
    counts = np.bincount(inverse, minlength=len(uniq))[:, None]
    return sums / counts, inverse


def _report_coverage(provenance: dict) -> None:
    n, k = provenance["n_genes"], provenance["n_genes_with_knowledge"]
    logger.info(
        "annotate: %d of %d genes carry knowledge (%s)", k, n, provenance["knowledge_source"]
    )
    if n and k / n < MIN_KNOWLEDGE_SHARE:
        logger.warning(
            "only %d of %d genes (%.0f%%) carry knowledge in %r: zero-shot annotation "
            "rests on few genes. Use source='atlas' (every gene) or check species and "
            "gene names.",
            k,
            n,
            100 * k / n,
            provenance["knowledge_source"],
        )


def annotate(
    adata: AnnData,
    *,
    method: Literal["zero_shot", "marker_score", "llm"] = "zero_shot",
    candidates: object = "auto",
    groupby: str | None = None,
    layer: str | None = None,
    use_raw: bool = False,
    source: object = DEFAULT_GENE_KNOWLEDGE,
    encoder: str | TextEncoder = DEFAULT_TEXT_ENCODER,
    species: str = "auto",
    prototype: str = "card+markers",
    markers_in_card: bool = True,
    weighting: Literal["expression", "relative"] = "relative",
    center: bool | None = None,
    llm: object = "smollm2",
    llm_options: dict | None = None,
    tissue: str | None = None,
    constrained: bool | None = None,
    top_n: int = 10,
    retrieval: bool = True,
    key_added: str = CELLTYPE_KEY,
    cache: bool = True,
    copy: bool = False,
) -> AnnData | None:
    """Annotate cells (or clusters) with Cell Ontology cell types, without a reference.

    ``method="zero_shot"`` embeds each cell with GenePT-w over the genes that have
    knowledge (by default weighting each gene by its expression relative to the other
    cells) and each candidate cell type by its Cell Ontology card plus the mean text
    embedding of its marker genes; the closest cell type by cosine wins.
    ``method="marker_score"`` is the classic baseline: ``scanpy.tl.score_genes`` on the
    same curated markers, highest score wins. ``method="llm"`` asks an LLM to name each
    group from its top markers (prompt ``celltype_annotation``) and maps the answer onto
    the Cell Ontology (see :mod:`kbfm.tl.annotate_llm`); ``llm="dry-run"`` only records
    the prompts and a token estimate.

    Parameters
    ----------
    adata
        Non-negative log-normalised expression (or counts) in ``X``, a layer or ``raw``.
    method
        ``"zero_shot"`` or ``"marker_score"``.
    candidates
        ``"auto"`` (default): lineages chosen from ``tissue`` when it is one kbfm knows
        (``"brain"``, ``"blood"``, ``"lymph node"``, ...), else voted by the data's
        clusters, then every cell type of those lineages with marker knowledge.
        A Cell Ontology branch (e.g. ``"neuron"``, ``"leukocyte"``): its descendants
        with marker knowledge (kbfm's curated table or cellconsensus, 1,375 types).
        ``None``: every type with marker knowledge. Or a list of ids/labels.
        The count used is logged and recorded in ``uns``.
    groupby
        Annotate groups instead of cells: an ``obs`` column, or ``"auto"`` for Leiden
        clusters computed here (stored in ``obs["kbfm_clusters"]``). ``method="llm"``
        always annotates groups: ``None`` means ``"auto"`` there.
    layer, use_raw
        Where to read expression. By default ``X``; when ``X`` holds negative values
        (Pearson residuals, scaled data) a log or counts layer or ``raw`` is used and
        the choice logged. Counts are log-normalised on a copy (also before
        ``groupby="auto"`` clustering).
    source, encoder, species
        Gene knowledge (default ``"atlas"``: a card for every gene), text encoder and
        species (``"auto"``: detected from the gene names; see
        :func:`kbfm.tl.embed_genes`). A warning is logged when fewer than 20% of the
        genes carry knowledge.
    prototype
        ``"card"`` (Cell Ontology card text), ``"markers"`` (mean text embedding of the
        cell type's marker genes) or ``"card+markers"`` (both).
    markers_in_card
        Write the marker genes into the card text.
    weighting
        ``"relative"`` (z-score, negative part 0) or ``"expression"`` (raw GenePT-w).
    llm, llm_options
        For ``method="llm"``: ``"smollm2"`` (offline, tiny), ``"dry-run"``,
        ``"hf:<id or path>"``, ``"openai:<model>"``, and backend options such as
        ``{"base_url": ..., "api_key_env": ...}``.
    tissue
        Tissue of the sample: chooses ``candidates="auto"`` lineages and is named in the
        LLM prompt.
    constrained
        For ``method="llm"``: score the candidates by log-likelihood instead of free
        text (default: on for local models, off for HTTP endpoints).
    top_n
        Marker genes per group in the LLM prompt.
    retrieval
        For ``method="llm"``: put, after each marker gene, the cell types kbfm's
        knowledge says it marks, and list the allowed candidates in the prompt
        (``celltype_annotation`` v2); ``False`` gives the genes alone (v1).
    center
        Subtract the mean cell embedding from the cells and the mean prototype from the
        prototypes before matching. GenePT-w over thousands of genes is dominated by a
        direction all cells share (every card then looks closest to the same cells);
        centering removes it. ``None``: center for broad knowledge sources (atlas,
        NCBI, GenePT, your tables), not for ``"builtin"``, which describes marker genes
        only.
    key_added
        Prefix of the ``obs`` keys written.
    cache
        Use the embedding cache.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the copy when ``copy=True``. Writes ``obs[key_added]`` (label),
    ``obs[key_added + "_id"]`` (CL id), ``obs[key_added + "_score"]`` (cosine or marker
    score of the winner), ``obsm[key_added + "_scores"]`` (all candidates) and
    ``uns["kbfm"]["annotate"]``.

    Examples
    --------
    >>> import scanpy as sc, kbfm
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> kbfm.tl.annotate(adata, use_raw=True, candidates="hematopoietic cell", groupby="auto")
    >>> adata.obs["kbfm_celltype"].value_counts().index[0]  # doctest: +SKIP
    'CD14-positive monocyte'
    """
    from ..knowledge import CellOntology

    if method not in METHODS:
        hint = closest_names(method, METHODS)
        msg = f"Unknown annotation method {method!r}; choose from {METHODS}.{hint}"
        raise KbfmInputError(msg)
    check_adata(adata)
    if groupby not in (None, "auto") and groupby not in adata.obs:
        msg = (
            f"groupby={groupby!r} is not a column of adata.obs; "
            f"use one of {list(adata.obs)} or 'auto'."
        )
        raise KbfmInputError(msg)
    if method == "llm" and groupby is None:
        # An LLM names clusters, never single cells: cluster here unless told otherwise.
        groupby = "auto"
        logger.info("method='llm' annotates clusters: groupby='auto' (Leiden) is used.")
    species = resolve_species(species, adata.raw.var_names if use_raw else adata.var_names)
    expr = log_expression(adata, layer=layer, use_raw=use_raw)
    X, names = expr.X, expr.names
    ontology = CellOntology.load()

    # A branch, list or known tissue is resolved (and refused) before any clustering.
    choice = None
    if not needs_data(candidates, tissue):
        choice = resolve_candidates_full(candidates, ontology, species, tissue=tissue)
    groups = None
    if groupby == "auto":
        groups = auto_clusters(X)
    elif groupby is not None:
        groups = adata.obs[groupby].astype(str).to_numpy()
    if choice is None:
        votes = groups if groups is not None else auto_clusters(X)
        choice = resolve_candidates_full(
            candidates, ontology, species, tissue=tissue, X=X, gene_names=names, groups=votes
        )
    ids = choice.ids
    logger.info("annotate: %d candidate cell types (%s)", len(ids), choice.how)
    params: dict = {
        "method": method,
        "n_candidates": len(ids),
        "candidates_how": choice.how,
        "candidate_lineages": choice.lineages,
        "groupby": groupby,
        "species": species,
        "expression": expr.where,
    }
    tissue = tissue or "unknown tissue"

    if method == "llm":
        from .annotate_llm import annotate_groups_with_llm

        adata = adata.copy() if copy else adata
        if groupby == "auto":
            adata.obs[AUTO_CLUSTER_KEY] = pd.Categorical(groups)
        annotate_groups_with_llm(
            adata,
            X,
            names,
            groups,
            ids,
            ontology=ontology,
            llm=llm,
            llm_options=llm_options,
            species=species,
            tissue=tissue,
            constrained=constrained,
            top_n=top_n,
            key_added=key_added,
            cache=cache,
            params=params,
            retrieval=retrieval,
        )
        return adata if copy else None
    if method == "marker_score":
        scores, labels_ids = marker_score_matrix(X, names, ids, ontology=ontology, species=species)
        params["markers"] = "kbfm curated marker table"
    else:
        enc = get_text_encoder(encoder) if not isinstance(encoder, TextEncoder) else encoder
        gv = gene_vectors(names, source=source, encoder=enc, species=species, cache=cache)
        keep = np.flatnonzero(gv.has_knowledge)
        _report_coverage(gv.provenance)
        cells = _genept_w(
            X[:, keep], gv.matrix[keep], relative=weighting == "relative", chunk_size=10_000
        )
        lookup = {gv.symbols[i].upper(): gv.matrix[i] for i in keep}
        protos = build_prototypes(
            ids,
            ontology=ontology,
            encoder=enc,
            gene_lookup=lookup,
            species=species,
            kind=prototype,
            markers_in_card=markers_in_card,
            cache=cache,
        )
        vectors = protos.vectors
        broad = gv.provenance["knowledge_source"] != "builtin"
        centered = broad if center is None else bool(center)
        if centered:
            cells, vectors = _centered(cells), _centered(vectors)
        scores, labels_ids = cells @ vectors.T, protos.ids
        params.update(
            gv.provenance,
            prototype=prototype,
            markers_in_card=markers_in_card,
            weighting=weighting,
            centered=centered,
        )

    if groups is not None:
        group_scores, inverse = _group_mean(scores, groups)
        scores = group_scores[inverse]
    best = np.argmax(scores, axis=1)
    labels = [ontology.term(i).label for i in labels_ids]
    adata = adata.copy() if copy else adata
    if groupby == "auto":
        adata.obs[AUTO_CLUSTER_KEY] = pd.Categorical(groups)
    adata.obs[key_added] = pd.Categorical([labels[b] for b in best])
    adata.obs[f"{key_added}_id"] = pd.Categorical([labels_ids[b] for b in best])
    adata.obs[f"{key_added}_score"] = scores[np.arange(len(best)), best].astype(np.float32)
    adata.obsm[f"{key_added}_scores"] = pd.DataFrame(
        scores.astype(np.float32), index=adata.obs_names, columns=labels
    )
    params["candidates"] = list(labels_ids)
    params["ontology_version"] = ontology.version
    record_step(adata, "annotate", key_added=key_added, **params)
    return adata if copy else None
