"""Knowledge in deconvolution: signatures smoothed through text-embedding neighbours.

Also the signatures built from Cell Ontology + marker knowledge when there is no
reference.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from ..._errors import KbfmInputError, preview

logger = logging.getLogger(__name__)


def smooth_signatures(
    S: np.ndarray,
    reliability: np.ndarray,
    embeddings: np.ndarray,
    has_knowledge: np.ndarray,
    *,
    smoothing: float = 20.0,
    n_neighbors: int = 10,
) -> tuple[np.ndarray, dict]:
    """Shrink the cell-type profile of poorly measured genes towards their text neighbours.

    Each gene's profile across types ``p_g = S[:, g] / S[:, g].sum()`` is replaced by
    ``(1 - a_g) p_g + a_g q_g``, where ``q_g`` is the similarity-weighted mean profile of
    its ``n_neighbors`` nearest genes in text-embedding space (cosine, only genes with
    knowledge and more reference counts than ``smoothing``) and
    ``a_g = smoothing / (smoothing + reliability_g)``: a gene seen in few reference counts
    borrows most from genes whose descriptions are alike; a well measured gene keeps its
    own profile. The total of each gene across types is kept.

    Parameters
    ----------
    S
        Signatures ``(n_types, n_genes)``.
    reliability
        Reference counts of each gene (summed over cells).
    embeddings
        Text embeddings ``(n_genes, dim)`` (zero rows for genes without knowledge).
    has_knowledge
        Mask of genes with an embedding.
    smoothing
        Pseudo-count weight of the neighbour profile.
    n_neighbors
        Neighbours per gene.

    Returns
    -------
    ``(S_smoothed, report)``.
    """
    S = np.asarray(S, dtype=float)
    totals = S.sum(axis=0)
    P = S / np.where(totals > 0, totals, 1.0)
    E = np.asarray(embeddings, dtype=float)
    norms = np.linalg.norm(E, axis=1)
    E = E / np.where(norms > 0, norms, 1.0)[:, None]
    donors = np.flatnonzero(has_knowledge & (reliability > smoothing))
    out = P.copy()
    alpha = np.zeros(S.shape[1])
    targets = np.flatnonzero(has_knowledge)
    if len(donors) >= 2 and len(targets):
        sims = E[targets] @ E[donors].T
        for row, g in enumerate(targets):
            s = sims[row].copy()
            s[donors == g] = -np.inf
            k = min(n_neighbors, int(np.isfinite(s).sum()))
            if k == 0:
                continue
            nb = np.argpartition(-s, k - 1)[:k]
            w = np.exp((s[nb] - s[nb].max()) / 0.05)
            q = P[:, donors[nb]] @ (w / w.sum())
            alpha[g] = smoothing / (smoothing + reliability[g])
            out[:, g] = (1 - alpha[g]) * P[:, g] + alpha[g] * q
    report = {
        "n_genes": int(S.shape[1]),
        "n_with_knowledge": int(has_knowledge.sum()),
        "n_donors": len(donors),
        "n_smoothed": int((alpha > 0.05).sum()),
        "mean_weight_on_neighbours": float(alpha[targets].mean()) if len(targets) else 0.0,
    }
    return out * totals[None, :], report


#: A type needs this many of its own marker genes in the panel before kbfm looks
#: further. Measured on the two mouse references (benchmarks/annotation_breadth.py):
#: 3 gave pseudo-spot RMSE 0.116 / 0.154, 1 gave 0.128 / 0.179.
MIN_PANEL_MARKERS = 3
_DEEP_MARKERS = 100


def _panel_markers(
    cid: str, onto, species: str, panel: set[str] | None, *, shallow: dict, deep: dict
) -> tuple[list[str], str]:
    """Markers of ``cid`` measured in ``panel``, and where they came from.

    Its own top markers first; when fewer than :data:`MIN_PANEL_MARKERS` are measured,
    deeper into its ranked list (top 100), then the nearest ancestor that has measured
    markers (a dentate gyrus granule cell, which has no marker list, borrows from its
    hippocampal-neuron ancestor).
    """
    from ...knowledge.cell_ontology import GENERIC_TERMS

    own = shallow.get(cid, [])
    if panel is None:
        return own, "own"

    def measured(genes):
        return [g for g in genes if g.upper() in panel]

    if len(measured(own)) >= MIN_PANEL_MARKERS:
        return own, "own"
    deeper = measured(deep.get(cid, []))
    if len(deeper) >= MIN_PANEL_MARKERS:
        return deeper, "own, deeper in the ranked list"
    for ancestor in onto.term(cid).ancestors:
        if ancestor in GENERIC_TERMS:
            continue
        borrowed = measured(deep.get(ancestor, []))
        if len(borrowed) >= MIN_PANEL_MARKERS:
            merged = list(dict.fromkeys([*deeper, *borrowed]))
            return merged, f"ancestor {onto.term(ancestor).label} ({ancestor})"
    return deeper or own, "own"


def resolve_cell_types(
    cell_types: Sequence[str],
    *,
    species: str,
    markers: Mapping[str, Sequence[str]] | None,
    gene_names: Sequence[str] | None = None,
) -> tuple[list[str], dict[str, list[str]], dict]:
    """Marker genes per requested cell type, from ``markers`` or from kbfm.knowledge.

    With ``gene_names`` (the spatial panel), a type whose markers are not measured
    reaches deeper into its ranked consensus markers, then borrows the markers of its
    nearest ancestor that has measured ones; provenance says which types did.

    Returns
    -------
    ``(labels, markers_by_label, provenance)``.
    """
    if markers is not None:
        labels = list(cell_types) if cell_types else list(markers)
        missing = [c for c in labels if c not in markers]
        if missing:
            msg = f"markers= has no entry for cell types {missing}; keys: {list(markers)}."
            raise KbfmInputError(msg)
        return labels, {c: list(markers[c]) for c in labels}, {"markers": "given by the caller"}
    if not cell_types:
        msg = (
            "Zero-shot deconvolution (no reference) needs cell_types=[...] (Cell Ontology "
            "labels, synonyms or CL ids, e.g. ['B cell', 'T cell', 'macrophage']) or markers=."
        )
        raise KbfmInputError(msg)
    from ...knowledge import CellOntology, marker_sets

    onto = CellOntology.load()
    ids, labels = [], []
    for name in cell_types:
        ids.append(onto.term(name).id)  # raises with the closest labels when unknown
        labels.append(str(name))
    shallow = marker_sets(species=species, cell_types=ids, ontology=onto)
    deep = marker_sets(species=species, top_n=_DEEP_MARKERS)
    for cid in ids:
        deep.setdefault(cid, shallow.get(cid, []))
    panel = {str(g).upper() for g in gene_names} if gene_names is not None else None
    by_label, origin = {}, {}
    for lab, cid in zip(labels, ids, strict=True):
        by_label[lab], origin[lab] = _panel_markers(
            cid, onto, species, panel, shallow=shallow, deep=deep
        )
    empty = [lab for lab, genes in by_label.items() if not genes]
    if empty:
        msg = (
            f"kbfm.knowledge has no marker genes for {empty} or their ancestors; pass "
            "markers={type: [genes]} or choose broader / other cell types."
        )
        raise KbfmInputError(msg)
    borrowed = {lab: how for lab, how in origin.items() if how != "own"}
    if borrowed:
        logger.info("zero-shot markers beyond the type's own top list: %s", borrowed)
    prov = {
        "markers": "kbfm.knowledge.marker_sets (curated + cellconsensus)",
        "cl_ids": dict(zip(labels, ids, strict=True)),
        "marker_origin": borrowed,
    }
    return labels, by_label, prov


def marker_signatures(
    gene_names: Sequence[str],
    markers_by_label: Mapping[str, Sequence[str]],
    *,
    baseline: float = 0.1,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Pseudo-signatures from marker lists: ``baseline + 1`` for a type's markers.

    Only genes that are a marker of some type are kept: the count model's platform effects
    then absorb each gene's unknown level, and the proportions explain how markers of
    each type rise and fall together across spots.

    Returns
    -------
    ``(S, gene_idx, report)``: ``S`` is ``(n_types, n_used)`` over ``gene_names[gene_idx]``.
    """
    upper = {}
    for i, g in enumerate(gene_names):
        upper.setdefault(str(g).upper(), i)
    labels = list(markers_by_label)
    found = {
        lab: sorted({upper[m.upper()] for m in markers_by_label[lab] if m.upper() in upper})
        for lab in labels
    }
    absent = [lab for lab in labels if not found[lab]]
    if absent:
        some = {lab: list(markers_by_label[lab])[:5] for lab in absent}
        msg = (
            f"None of the marker genes of {absent} is in the spatial data (markers: {some}; "
            f"data genes e.g. {preview(gene_names, 3)}). Check species and symbols, or pass "
            "markers= that the panel measures."
        )
        raise KbfmInputError(msg)
    gene_idx = np.array(sorted(set().union(*found.values())), dtype=int)
    col = {g: j for j, g in enumerate(gene_idx)}
    S = np.full((len(labels), len(gene_idx)), baseline)
    for t, lab in enumerate(labels):
        for g in found[lab]:
            S[t, col[g]] += 1.0
    report = {lab: [str(gene_names[g]) for g in found[lab]] for lab in labels}
    logger.info("zero-shot markers found: %s", {k: len(v) for k, v in report.items()})
    return S, gene_idx, {"markers_used": report}
