"""Gene names -> knowledge text -> text embeddings, shared by the tl functions."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .._errors import KbfmInputError, preview
from ..encoders import DEFAULT_TEXT_ENCODER, TextEncoder, encode_texts, get_text_encoder
from .gene_descriptions import DEFAULT_GENE_KNOWLEDGE

logger = logging.getLogger(__name__)


@dataclass
class GeneVectors:
    """Text embeddings for a list of gene names.

    Attributes
    ----------
    matrix
        ``(n_genes, dim)`` float32; zero rows for genes without knowledge.
    has_knowledge
        Boolean mask of genes that got an embedding.
    symbols
        Normalised symbol per gene (``None`` when unmatched).
    report
        The gene-matching report (counts, unmatched names).
    provenance
        Knowledge source / version and encoder id / revision.
    """

    matrix: np.ndarray
    has_knowledge: np.ndarray
    symbols: list[str | None]
    report: object
    provenance: dict


def _with_detected_species(knowledge):
    """A file or object source says nothing of its species: read it off its symbols."""
    from .species import detect_species

    try:
        found = detect_species(list(knowledge.symbols)[:5000])
    except KbfmInputError:
        return knowledge
    if found != knowledge.species:
        logger.info("knowledge %r holds %s gene symbols", knowledge.source, found)
        knowledge = copy.copy(knowledge)  # the caller's object keeps its species
        knowledge.species = found
    return knowledge


def gene_vectors(
    gene_names: Sequence[str],
    *,
    source: object = DEFAULT_GENE_KNOWLEDGE,
    encoder: str | TextEncoder = DEFAULT_TEXT_ENCODER,
    species: str = "auto",
    cache: bool = True,
) -> GeneVectors:
    """Embed the knowledge text of each gene, after normalising the gene names.

    Parameters
    ----------
    gene_names
        Gene names as in ``var_names`` (symbols, aliases or Ensembl ids).
    source
        Knowledge source name, path or :class:`~kbfm.knowledge.GeneKnowledge`.
    encoder
        Text encoder name or object.
    species
        Species of the gene names: ``"human"``, ``"mouse"`` or ``"auto"`` (detected
        from their spelling). When the knowledge source is of the other species (e.g.
        a human-only GenePT file for mouse data), names are mapped through orthologs
        and the match report says so.
    cache
        Use the on-disk embedding cache.

    Returns
    -------
    A :class:`GeneVectors`.
    """
    from . import load_gene_knowledge, looks_like_ensembl, normalize_symbols
    from .gene_descriptions import GENE_KNOWLEDGE_SOURCES
    from .species import resolve_species

    gene_names = [str(g) for g in gene_names]
    species = resolve_species(species, gene_names)
    knowledge = load_gene_knowledge(source, species=species)
    if not isinstance(source, str) or source not in GENE_KNOWLEDGE_SOURCES:
        knowledge = _with_detected_species(knowledge)
    symbols, report = normalize_symbols(
        gene_names, species=species, target_species=knowledge.species, known=knowledge.symbols
    )
    if knowledge.species != species:
        logger.info(
            "%s gene names mapped to %s knowledge %r through orthologs: %s",
            species,
            knowledge.species,
            knowledge.source,
            report.summary(),
        )
    matched = [i for i, s in enumerate(symbols) if s is not None and s in knowledge]
    if not matched:
        hint = ""
        if looks_like_ensembl(gene_names):
            hint = (
                " The names look like Ensembl ids and none could be mapped to symbols: "
                "put symbols in var_names (e.g. from a var column) or check the species."
            )
        msg = (
            f"None of the {len(gene_names)} genes has a description in knowledge source "
            f"{knowledge.source!r} ({len(knowledge)} genes). Examples of your genes: "
            f"{preview(gene_names)}; examples in the source: {preview(sorted(knowledge.symbols))}."
            f"{hint}"
        )
        raise KbfmInputError(msg)
    enc = get_text_encoder(encoder) if not isinstance(encoder, TextEncoder) else encoder
    texts = [knowledge.text(symbols[i]) for i in matched]
    vectors = encode_texts(texts, enc, cache=cache)
    matrix = np.zeros((len(gene_names), enc.dim), dtype=np.float32)
    matrix[matched] = vectors
    mask = np.zeros(len(gene_names), dtype=bool)
    mask[matched] = True
    provenance = {
        "knowledge_source": knowledge.source,
        "knowledge_version": knowledge.version,
        "encoder": enc.name,
        "encoder_model_id": enc.model_id,
        "encoder_revision": enc.revision,
        "n_genes": len(gene_names),
        "n_genes_with_knowledge": len(matched),
        "species": species,
        "knowledge_species": knowledge.species,
    }
    return GeneVectors(matrix, mask, symbols, report, provenance)
