"""Cell-type prototypes in the gene-knowledge text space.

A prototype is what a cell type looks like to the text encoder: the embedding of its
Cell Ontology card (label, synonyms, definition, marker genes) and/or the mean text
embedding of its marker genes — the same gene vectors that GenePT-w averages for a
cell, so cells and cell types meet in one space.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..._errors import KbfmInputError
from ...encoders import TextEncoder, encode_texts

PROTOTYPE_KINDS = ("card", "markers", "card+markers")


@dataclass
class CellTypePrototypes:
    """Prototype vectors, one row per candidate cell type."""

    ids: list[str]
    labels: list[str]
    vectors: np.ndarray
    markers: dict[str, list[str]]
    kind: str


def resolve_candidates(candidates: object, ontology, species: str = "human") -> list[str]:
    """Turn a candidate spec into Cell Ontology ids.

    A thin wrapper of :func:`kbfm.tl._candidates.resolve_candidates` without data
    (``"auto"`` needs data there).

    Parameters
    ----------
    candidates
        ``None`` (every cell type with marker knowledge), a branch name/id (its
        descendants that have markers, e.g. ``"neuron"``), or a list of
        ids/labels/synonyms.
    ontology
        A :class:`~kbfm.knowledge.CellOntology`.
    species
        Marker species.

    Returns
    -------
    Sorted unique CL ids.
    """
    from ._candidates import resolve_candidates as resolve

    return resolve(candidates, ontology, species).ids


def build_prototypes(
    ids: Sequence[str],
    *,
    ontology,
    encoder: TextEncoder,
    gene_lookup: dict[str, np.ndarray],
    species: str = "human",
    kind: str = "card+markers",
    markers_in_card: bool = True,
    cache: bool = True,
) -> CellTypePrototypes:
    """Embed candidate cell types.

    Parameters
    ----------
    ids
        Cell Ontology ids.
    ontology
        A :class:`~kbfm.knowledge.CellOntology`.
    encoder
        The text encoder used for the genes (same space).
    gene_lookup
        Upper-case gene symbol -> its text embedding (genes of the data with knowledge).
    species
        Marker species.
    kind
        ``"card"`` (card text only), ``"markers"`` (mean of marker-gene embeddings) or
        ``"card+markers"`` (sum of both, normalised).
    markers_in_card
        List marker genes inside the card text.
    cache
        Use the embedding cache for card texts.

    Returns
    -------
    A :class:`CellTypePrototypes`.
    """
    from ...knowledge import marker_sets

    if kind not in PROTOTYPE_KINDS:
        msg = f"Unknown prototype kind {kind!r}; choose from {PROTOTYPE_KINDS}."
        raise KbfmInputError(msg)
    markers = marker_sets(species=species, cell_types=list(ids), ontology=ontology)
    cards = [ontology.card(i, markers=markers.get(i) if markers_in_card else None) for i in ids]
    card_vecs = encode_texts(cards, encoder, cache=cache)
    marker_vecs = np.zeros_like(card_vecs)
    for row, cid in enumerate(ids):
        found = [gene_lookup[g.upper()] for g in markers.get(cid, []) if g.upper() in gene_lookup]
        if found:
            mean = np.mean(found, axis=0)
            marker_vecs[row] = mean / max(np.linalg.norm(mean), 1e-12)
    if kind == "card":
        vectors = card_vecs
    elif kind == "markers":
        vectors = marker_vecs
    else:
        vectors = card_vecs + marker_vecs
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    labels = [ontology.term(i).label for i in ids]
    return CellTypePrototypes(list(ids), labels, vectors.astype(np.float32), markers, kind)
