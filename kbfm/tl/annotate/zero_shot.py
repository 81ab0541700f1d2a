"""Zero-shot annotation: GenePT-w cells against Cell Ontology prototypes in text space."""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
from anndata import AnnData

from ..._keys import CELLTYPE_KEY
from ...encoders import DEFAULT_TEXT_ENCODER, TextEncoder, get_text_encoder
from ...knowledge._gene_vectors import gene_vectors
from ...knowledge.gene_descriptions import DEFAULT_GENE_KNOWLEDGE
from ..embed_cells import _genept_w
from ._inputs import prepare_inputs, write_scores
from ._prototypes import build_prototypes

logger = logging.getLogger(__name__)

#: Below this share of genes with knowledge, annotate warns.
MIN_KNOWLEDGE_SHARE = 0.2


def _centered(x: np.ndarray) -> np.ndarray:
    out = x - x.mean(axis=0, keepdims=True)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


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


def annotate_zero_shot(
    adata: AnnData,
    *,
    candidates: object = "auto",
    groupby: str | None = None,
    layer: str | None = None,
    use_raw: bool = False,
    species: str = "auto",
    tissue: str | None = None,
    source: object = DEFAULT_GENE_KNOWLEDGE,
    encoder: str | TextEncoder = DEFAULT_TEXT_ENCODER,
    prototype: str = "card+markers",
    markers_in_card: bool = True,
    weighting: Literal["expression", "relative"] = "relative",
    center: bool | None = None,
    key_added: str = CELLTYPE_KEY,
    cache: bool = True,
    copy: bool = False,
) -> AnnData | None:
    """Annotate cells (or clusters) by text-space similarity to Cell Ontology types.

    Each cell is embedded with GenePT-w over the genes that have knowledge (by default
    weighting each gene by its expression relative to the other cells), each candidate
    cell type by its Cell Ontology card plus the mean text embedding of its marker
    genes; the closest cell type by cosine wins. ``annotate(method="zero_shot")`` calls
    this function.

    Parameters
    ----------
    adata
        Non-negative log-normalised expression (or counts) in ``X``, a layer or ``raw``.
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
        clusters computed here (stored in ``obs["kbfm_clusters"]``).
    layer, use_raw
        Where to read expression. By default ``X``; when ``X`` holds negative values
        (Pearson residuals, scaled data) a log or counts layer or ``raw`` is used and
        the choice logged. Counts are log-normalised on a copy (also before
        ``groupby="auto"`` clustering).
    species
        ``"auto"``: detected from the gene names; see :func:`kbfm.tl.embed_genes`.
    tissue
        Tissue of the sample: chooses the ``candidates="auto"`` lineages.
    source, encoder
        Gene knowledge (default ``"atlas"``: a card for every gene) and text encoder.
        A warning is logged when fewer than 20% of the genes carry knowledge.
    prototype
        ``"card"`` (Cell Ontology card text), ``"markers"`` (mean text embedding of the
        cell type's marker genes) or ``"card+markers"`` (both).
    markers_in_card
        Write the marker genes into the card text.
    weighting
        ``"relative"`` (z-score, negative part 0) or ``"expression"`` (raw GenePT-w).
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
    ``obs[key_added + "_id"]`` (CL id), ``obs[key_added + "_score"]`` (cosine of the
    winner), ``obsm[key_added + "_scores"]`` (all candidates) and
    ``uns["kbfm"]["annotate"]``.

    Examples
    --------
    >>> import scanpy as sc, kbfm
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> kbfm.tl.annotate_zero_shot(
    ...     adata, use_raw=True, candidates="hematopoietic cell", groupby="auto"
    ... )
    >>> adata.obs["kbfm_celltype"].value_counts().index[0]  # doctest: +SKIP
    'CD14-positive monocyte'
    """
    inputs = prepare_inputs(
        adata,
        method="zero_shot",
        candidates=candidates,
        groupby=groupby,
        layer=layer,
        use_raw=use_raw,
        species=species,
        tissue=tissue,
    )
    X, names, species = inputs.X, inputs.names, inputs.species
    enc = get_text_encoder(encoder) if not isinstance(encoder, TextEncoder) else encoder
    gv = gene_vectors(names, source=source, encoder=enc, species=species, cache=cache)
    keep = np.flatnonzero(gv.has_knowledge)
    _report_coverage(gv.provenance)
    cells = _genept_w(
        X[:, keep], gv.matrix[keep], relative=weighting == "relative", chunk_size=10_000
    )
    lookup = {gv.symbols[i].upper(): gv.matrix[i] for i in keep}
    protos = build_prototypes(
        inputs.candidate_ids,
        ontology=inputs.ontology,
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
    inputs.params.update(
        gv.provenance,
        prototype=prototype,
        markers_in_card=markers_in_card,
        weighting=weighting,
        centered=centered,
    )
    return write_scores(
        adata, cells @ vectors.T, protos.ids, inputs, key_added=key_added, copy=copy
    )
