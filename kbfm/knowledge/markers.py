"""Cell-type marker genes, and loaders for public marker tables.

:func:`marker_sets` joins two sources: ``data/markers_human.tsv``, kbfm's own curation
(4-8 canonical markers for each of 47 Cell Ontology terms), and the consensus markers
for 1,375 Cell Ontology types read from the ``cellconsensus`` wheel
(:mod:`kbfm.knowledge.consensus_markers`). Every row of the curated table says what kind
of evidence it is (``protein``: a surface, lineage or histology marker; ``rna``: a
transcript marker in single-cell RNA-seq) and where the fact is reported (see
``data/README.md``). Mouse markers are derived through the ortholog tables in
:mod:`kbfm.knowledge.gene_symbols`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from .._errors import KbfmInputError

if TYPE_CHECKING:
    from .cell_ontology import CellOntology

logger = logging.getLogger(__name__)

#: Version of the curated table; recorded with results that use it.
MARKER_TABLE_VERSION = "kbfm-markers-2026.11b"
MARKER_COLUMNS = ("cl_id", "cell_type", "gene", "evidence", "source")
MARKER_FILE_KINDS = ("panglaodb", "cellmarker")
_DATA = Path(__file__).parent / "data"
_PANGLAO_SPECIES = {"human": "Hs", "mouse": "Mm"}


@lru_cache(maxsize=1)
def _human_table() -> pd.DataFrame:
    return pd.read_csv(_DATA / "markers_human.tsv", sep="\t", dtype=str)


def marker_table(species: str = "human") -> pd.DataFrame:
    """Return kbfm's curated marker table.

    Parameters
    ----------
    species
        ``"human"``, or ``"mouse"``: each human gene is replaced by its best mouse
        ortholog (Ensembl BioMart, HCOP for genes BioMart lacks). Genes without an
        ortholog, or with only many-to-many orthologs (e.g. ``LILRA4``), are dropped,
        because the mouse gene chosen in such a family is often not a marker.

    Returns
    -------
    A copy with columns ``cl_id``, ``cell_type``, ``gene``, ``evidence``, ``source``.

    Examples
    --------
    >>> table = marker_table()
    >>> table.loc[table["cell_type"] == "B cell", "gene"].tolist()[:3]
    ['MS4A1', 'CD79A', 'CD79B']
    """
    table = _human_table().copy()
    if species == "human":
        return table
    if species != "mouse":
        msg = f"species must be 'human' or 'mouse', got {species!r}."
        raise KbfmInputError(msg)
    from .gene_symbols import human_to_mouse

    mapping = human_to_mouse(table["gene"].unique(), many_to_many=False)
    dropped = sorted(set(table["gene"]) - set(mapping))
    if dropped:
        logger.info("mouse markers: %d human genes without a usable ortholog dropped", len(dropped))
    table["gene"] = table["gene"].map(mapping)
    return table.dropna(subset=["gene"]).reset_index(drop=True)


#: Marker knowledge: kbfm's curated table, cellconsensus, or both (curated first).
MARKER_SOURCES = ("combined", "curated", "consensus")
_WARNED_EMPTY: set[str] = set()
#: Consensus markers taken per cell type by default.
DEFAULT_TOP_MARKERS = 20


@lru_cache(maxsize=8)
def _all_marker_sets(species: str, source: str, top_n: int) -> dict[str, tuple[str, ...]]:
    sets: dict[str, list[str]] = {}
    if source in ("combined", "curated"):
        table = marker_table(species)
        for cid, gene in zip(table["cl_id"], table["gene"], strict=True):
            genes = sets.setdefault(cid, [])
            if gene not in genes:
                genes.append(gene)
    if source in ("combined", "consensus"):
        from .consensus_markers import load_consensus_knowledge

        consensus = {
            cid: [g for g, _ in ranked[:top_n]]
            for cid, ranked in load_consensus_knowledge().markers.items()
        }
        if species == "mouse":
            from .gene_symbols import gene_sets_to_mouse

            consensus = gene_sets_to_mouse(consensus)
        for cid, genes in consensus.items():
            merged = list(dict.fromkeys([*sets.get(cid, []), *genes]))
            sets[cid] = merged[: max(top_n, len(sets.get(cid, [])))]
    return {c: tuple(v) for c, v in sets.items() if v}


def marker_sets(
    species: str = "human",
    cell_types: Iterable[str] | None = None,
    ontology: CellOntology | None = None,
    *,
    source: str = "combined",
    top_n: int = DEFAULT_TOP_MARKERS,
) -> dict[str, list[str]]:
    """Return marker genes per Cell Ontology id.

    Parameters
    ----------
    species
        ``"human"`` or ``"mouse"`` (human markers translated through one-to-one and
        one-to-many orthologs, see :func:`marker_table`).
    cell_types
        Ids, labels or synonyms (one string is read as a list of one); default: every
        cell type with markers. A requested type without markers of its own gets the
        union of the markers of its descendants, best-supported first (e.g.
        ``"leukocyte"``). A type with neither maps to an empty list, and a warning is
        logged.
    ontology
        The :class:`~kbfm.knowledge.CellOntology` to resolve names (default: latest).
    source
        ``"combined"`` (default): kbfm's curated markers first, then the consensus
        markers of ``cellconsensus`` up to ``top_n`` genes (1,375 types);
        ``"curated"``: kbfm's table only (47 types); ``"consensus"``: cellconsensus only.
    top_n
        Consensus markers per type (curated markers are always all kept).

    Returns
    -------
    ``{cl_id: [genes]}``, in the order of ``cell_types``.

    Examples
    --------
    >>> marker_sets(cell_types=["B cell"])["CL:0000236"][:2]
    ['MS4A1', 'CD79A']
    >>> marker_sets(cell_types=["astrocyte"], source="consensus")["CL:0000127"][:3]
    ['GFAP', 'AQP4', 'SLC1A3']
    """
    if source not in MARKER_SOURCES:
        msg = f"Unknown marker source {source!r}; choose one of {list(MARKER_SOURCES)}."
        raise KbfmInputError(msg)
    if species not in _PANGLAO_SPECIES:
        msg = f"species must be 'human' or 'mouse', got {species!r}."
        raise KbfmInputError(msg)
    known = {c: list(v) for c, v in _all_marker_sets(species, source, int(top_n)).items()}
    if cell_types is None:
        return known
    if isinstance(cell_types, str):
        cell_types = [cell_types]
    from .cell_ontology import CellOntology

    onto = ontology or CellOntology.load()
    out: dict[str, list[str]] = {}
    for name in cell_types:
        cid = onto.term(name).id
        if cid in known:
            out[cid] = known[cid]
            continue
        below = set(onto.descendants(cid, include_self=False))
        union = [g for c, genes in known.items() if c in below for g in genes[:5]]
        out[cid] = list(dict.fromkeys(union))[: max(top_n, 1)]
        if not out[cid] and cid not in _WARNED_EMPTY:
            _WARNED_EMPTY.add(cid)  # once per process, not at every call
            logger.warning("no markers for %s (%s) or its descendants", name, cid)
    return out


def load_marker_file(
    path: str | os.PathLike, kind: str = "panglaodb", species: str = "human"
) -> dict[str, list[str]]:
    """Read a public marker table into ``{cell type name: [genes]}``.

    Parameters
    ----------
    path
        A PanglaoDB TSV (columns ``species``, ``official gene symbol``, ``cell type``,
        ...; species ``"Hs"``, ``"Mm"`` or ``"Mm Hs"``) or a CellMarker 2.0 CSV
        (columns ``Tissue``, ``CT``, ``Gene``; genes comma-joined).
    kind
        ``"panglaodb"`` or ``"cellmarker"``.
    species
        PanglaoDB: keep rows for ``"human"`` or ``"mouse"``. CellMarker files hold one
        species each, so this is not used to filter them.

    Returns
    -------
    Genes per cell type name (merged across tissues), in file order, without duplicates.

    Examples
    --------
    >>> sets = load_marker_file("PanglaoDB_markers_27_Mar_2020.tsv")  # doctest: +SKIP
    >>> "MS4A1" in sets["B cells"]  # doctest: +SKIP
    True
    """
    path = Path(path)
    if not path.is_file():
        msg = f"Marker file not found: {path}"
        raise KbfmInputError(msg)
    if kind not in MARKER_FILE_KINDS:
        msg = f"Unknown marker file kind {kind!r}; choose one of {list(MARKER_FILE_KINDS)}."
        raise KbfmInputError(msg)
    if species not in _PANGLAO_SPECIES:
        msg = f"species must be 'human' or 'mouse', got {species!r}."
        raise KbfmInputError(msg)
    if kind == "panglaodb":
        table = _read_columns(path, "\t", ("species", "official gene symbol", "cell type"), kind)
        code = _PANGLAO_SPECIES[species]
        keep = table["species"].fillna("").str.split().apply(lambda codes: code in codes)
        table = table[keep].dropna(subset=["official gene symbol", "cell type"])
        pairs = zip(table["cell type"], table["official gene symbol"], strict=True)
    else:
        table = _read_columns(path, ",", ("CT", "Gene"), kind).dropna(subset=["CT"])
        pairs = (
            (cell_type, gene.strip())
            for cell_type, genes in zip(table["CT"], table["Gene"].fillna(""), strict=True)
            for gene in genes.split(",")
            if gene.strip()
        )
    out: dict[str, list[str]] = {}
    for cell_type, gene in pairs:
        genes = out.setdefault(str(cell_type), [])
        if gene not in genes:
            genes.append(str(gene))
    return out


def _read_columns(path: Path, sep: str, columns: tuple[str, ...], kind: str) -> pd.DataFrame:
    table = pd.read_csv(path, sep=sep, dtype=str)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        msg = (
            f"{path} is not a {kind} marker table: missing column(s) {missing}; "
            f"it has {list(table.columns)[:8]}."
        )
        raise KbfmInputError(msg)
    return table
