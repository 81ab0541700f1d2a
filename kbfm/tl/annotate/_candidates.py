"""Which Cell Ontology types an annotation may choose from.

A candidate needs knowledge to be matched: marker genes from any source (kbfm's curated
table or cellconsensus), or, with ``include_defined=True``, at least a definition. The
spec can be ``None`` (every type with markers), an ontology branch (its knowledge-bearing
descendants), a list, or ``"auto"``: lineages chosen from the tissue named by the user
or, without one, from the data (each cluster votes for the lineage whose marker genes
it expresses most), then every knowledge-bearing type of those lineages.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from ..._errors import KbfmInputError, closest_names, preview

logger = logging.getLogger(__name__)

#: Tissue words -> cellconsensus lineages, for ``candidates="auto"`` with ``tissue=``.
_IMMUNE = ("t_cell", "b_plasma", "myeloid_cell", "mast_cell")
TISSUE_LINEAGES: dict[str, tuple[str, ...]] = {
    "blood": (*_IMMUNE, "erythroid_megakaryocyte", "stem_progenitor"),
    "pbmc": (*_IMMUNE, "erythroid_megakaryocyte"),
    "bone marrow": (*_IMMUNE, "erythroid_megakaryocyte", "stem_progenitor"),
    "lymph node": (*_IMMUNE, "endothelial", "fibroblast", "smc_pericyte"),
    "spleen": (*_IMMUNE, "erythroid_megakaryocyte", "endothelial", "fibroblast"),
    "brain": ("neural", "endothelial", "smc_pericyte", "myeloid_cell", "fibroblast"),
    "hippocampus": ("neural", "endothelial", "smc_pericyte", "myeloid_cell", "fibroblast"),
    "cortex": ("neural", "endothelial", "smc_pericyte", "myeloid_cell", "fibroblast"),
    "hypothalamus": ("neural", "endothelial", "smc_pericyte", "myeloid_cell", "fibroblast"),
    "retina": ("neural", "endothelial", "smc_pericyte", "myeloid_cell"),
    "liver": ("epithelial", "endothelial", "fibroblast", *_IMMUNE),
    "lung": ("epithelial", "endothelial", "fibroblast", "smc_pericyte", *_IMMUNE),
    "kidney": ("epithelial", "endothelial", "fibroblast", "smc_pericyte", *_IMMUNE),
    "intestine": ("epithelial", "endothelial", "fibroblast", "smc_pericyte", *_IMMUNE),
    "colon": ("epithelial", "endothelial", "fibroblast", "smc_pericyte", *_IMMUNE),
    "skin": ("epithelial", "endothelial", "fibroblast", "smc_pericyte", *_IMMUNE),
    "breast": ("epithelial", "endothelial", "fibroblast", "adipocyte", *_IMMUNE),
    "heart": ("muscle", "endothelial", "fibroblast", "smc_pericyte", "myeloid_cell"),
    "muscle": ("muscle", "endothelial", "fibroblast", "smc_pericyte", "myeloid_cell"),
    "testis": ("germ_cell", "epithelial", "endothelial", "fibroblast", "myeloid_cell"),
    "adipose": ("adipocyte", "endothelial", "fibroblast", "smc_pericyte", *_IMMUNE),
}
#: Lineages whose types cellconsensus does not list: an ontology root stands in.
_LINEAGE_ROOTS = {"muscle": "CL:0000187"}


@dataclass
class CandidateChoice:
    """Candidate cell types and how they were chosen (recorded in provenance)."""

    ids: list[str]
    how: str
    lineages: list[str] = field(default_factory=list)


#: Broad candidate sets keep types backed by at least this many marker sources
#: (curated types always count): one-source types are often narrow variants
#: ("liver dendritic cell") that outscore the common type on the same markers.
DEFAULT_MIN_SOURCES = 5


def knowledge_bearing_types(
    species: str, ontology, *, include_defined: bool = False, min_sources: int = 1
) -> set:
    """CL ids that have marker genes (any source), or also a definition.

    ``min_sources`` drops consensus types backed by fewer marker sources (kbfm's
    curated types are always kept).
    """
    from ...knowledge import marker_sets
    from ...knowledge.consensus_markers import load_consensus_knowledge

    curated = set(marker_sets(species=species, source="curated"))
    support = load_consensus_knowledge().n_sources
    ids = {
        c
        for c in marker_sets(species=species)
        if c in ontology and (c in curated or support.get(c, 0) >= min_sources)
    }
    if include_defined:
        ids |= {c for c, t in ontology.terms.items() if getattr(t, "definition", "")}
    return ids


def _branch(name: str, ontology, bearing: set) -> list[str]:
    root = ontology.term(name).id  # unknown names raise with close labels
    ids = sorted(set(ontology.descendants(root, include_self=True)) & bearing)
    if not ids:
        msg = (
            f"No cell type under {name!r} ({root}, {ontology.term(root).label!r}) has "
            "marker knowledge; pass a broader branch or an explicit list of cell types."
        )
        raise KbfmInputError(msg)
    return ids


def lineage_members(lineages: Sequence[str], ontology, bearing: set) -> list[str]:
    """Knowledge-bearing CL ids of the given cellconsensus lineages."""
    from ...knowledge.consensus_markers import load_consensus_knowledge

    wanted = set(lineages)
    ck = load_consensus_knowledge()
    ids = {c for c, lin in ck.lineage.items() if lin in wanted and c in bearing}
    for lineage, root in _LINEAGE_ROOTS.items():
        if lineage in wanted:
            ids |= set(ontology.descendants(root)) & bearing
    return sorted(ids)


def lineages_from_data(
    X, gene_names: Sequence[str], groups: np.ndarray, species: str, *, top_n: int = 20
) -> tuple[list[str], dict[str, str]]:
    """Vote for lineages: each group votes for the two lineages whose markers it expresses most.

    ``X`` is log-normalised. A lineage's score in a group is the mean, over its top
    ``top_n`` marker genes found in the data, of the genes' z-scored group means. Each
    group votes for its best lineage and, when its score is above the groups' average
    (z > 0), its second best: a candidate set must above all contain the truth, and a
    small cluster (smooth muscle in a lymph node) often scores close to two lineages.
    Lineages with fewer than 3 marker genes in the data cannot be voted for.

    Returns
    -------
    ``(lineages, votes)``: the lineages voted for (sorted), and
    ``{group: "lineage" or "lineage+lineage"}``.
    """
    from ...knowledge.consensus_markers import load_lineage_markers

    lineage_genes = load_lineage_markers()
    if species == "mouse":
        from ...knowledge.gene_symbols import gene_sets_to_mouse

        lineage_genes = gene_sets_to_mouse({k: v[:top_n] for k, v in lineage_genes.items()})
    column = {str(g).upper(): i for i, g in enumerate(gene_names)}
    uniq, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    dense = X.toarray() if sp.issparse(X) else np.asarray(X)
    means = np.vstack([dense[inverse == k].mean(axis=0) for k in range(len(uniq))])
    z = (means - means.mean(axis=0)) / np.maximum(means.std(axis=0), 1e-6)
    names, scores = [], []
    for lineage, genes in lineage_genes.items():
        cols = [column[g.upper()] for g in genes[:top_n] if g.upper() in column]
        if len(cols) >= 3:
            names.append(lineage)
            scores.append(z[:, cols].mean(axis=1))
    if not names:
        msg = (
            "candidates='auto' could not find marker genes of any lineage among the "
            f"data's genes (e.g. {preview(gene_names)}); pass an ontology branch or a list."
        )
        raise KbfmInputError(msg)
    table = np.vstack(scores)  # lineages x groups
    order = np.argsort(-table, axis=0)
    votes: dict[str, str] = {}
    chosen: set[str] = set()
    for k, group in enumerate(uniq):
        first, second = order[0, k], order[1, k] if len(names) > 1 else order[0, k]
        picked = [names[first]]
        if second != first and table[second, k] > 0:
            picked.append(names[second])
        votes[str(group)] = "+".join(picked)
        chosen.update(picked)
    return sorted(chosen), votes


def _tissue_key(tissue: str | None) -> str:
    return (tissue or "").strip().lower()


def needs_data(candidates: object, tissue: str | None) -> bool:
    """Whether :func:`resolve_candidates` must see the data (``"auto"``, unknown tissue)."""
    auto = isinstance(candidates, str) and candidates == "auto"
    return auto and _tissue_key(tissue) not in TISSUE_LINEAGES


def resolve_candidates(
    candidates: object,
    ontology,
    species: str = "human",
    *,
    include_defined: bool = False,
    min_sources: int = DEFAULT_MIN_SOURCES,
    tissue: str | None = None,
    X=None,
    gene_names: Sequence[str] | None = None,
    groups: np.ndarray | None = None,
) -> CandidateChoice:
    """Turn a candidate spec into Cell Ontology ids (see the module docstring).

    Parameters
    ----------
    candidates
        ``None``, ``"auto"``, a branch name/id, or a list of ids/labels/synonyms (list
        items that are branches are not expanded).
    ontology
        A :class:`~kbfm.knowledge.CellOntology`.
    species
        Marker species.
    include_defined
        Also accept types with a definition but no marker genes.
    min_sources
        For ``None``, ``"auto"`` and branches: keep consensus types backed by at least
        this many marker sources (see :data:`DEFAULT_MIN_SOURCES`). Lists are kept as
        given.
    tissue
        For ``"auto"``: a tissue word (``"brain"``, ``"blood"``, ``"lymph node"``, ...;
        see :data:`TISSUE_LINEAGES`); unknown words fall back to the data.
    X, gene_names, groups
        For ``"auto"`` from the data: log-normalised expression, its gene names and a
        group label per cell.

    Returns
    -------
    A :class:`CandidateChoice` with sorted unique ids.
    """
    bearing = knowledge_bearing_types(
        species, ontology, include_defined=include_defined, min_sources=min_sources
    )
    lineages: list[str] = []
    if candidates is None:
        ids, how = sorted(bearing), "all cell types with knowledge"
    elif isinstance(candidates, str) and candidates == "auto":
        key = _tissue_key(tissue)
        if key in TISSUE_LINEAGES:
            lineages, how = list(TISSUE_LINEAGES[key]), f"auto: lineages of tissue {key!r}"
        else:
            if X is None or groups is None or gene_names is None:
                msg = "candidates='auto' needs the data (or a known tissue=) to choose from."
                raise KbfmInputError(msg)
            lineages, votes = lineages_from_data(X, gene_names, groups, species)
            how = "auto: lineages voted by the data's clusters"
            if key and key != "unknown tissue":
                logger.warning(
                    "tissue %r is not one kbfm maps to lineages%s; chose lineages from "
                    "the data instead.",
                    tissue,
                    closest_names(key, TISSUE_LINEAGES),
                )
            logger.info("candidates='auto': cluster votes %s", votes)
        ids = lineage_members(lineages, ontology, bearing)
    elif isinstance(candidates, str):
        ids, how = _branch(candidates, ontology, bearing), f"branch {candidates!r}"
    else:
        ids = sorted({ontology.term(c).id for c in candidates})
        how = "list"
    if len(ids) < 2:
        msg = f"Need at least two candidate cell types, got {preview(ids)} ({how})."
        raise KbfmInputError(msg)
    return CandidateChoice(ids, how, lineages)
