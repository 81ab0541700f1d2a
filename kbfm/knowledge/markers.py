"""Curated cell-type marker genes, and loaders for public marker tables.

``data/markers_human.tsv`` is kbfm's own curation: 4-8 canonical markers for each of 47
Cell Ontology terms. Every row says what kind of evidence it is (``protein``: a surface,
lineage or histology marker; ``rna``: a transcript marker in single-cell RNA-seq) and
where the fact is reported (see ``data/README.md``). Mouse markers are derived from it
through the ortholog tables in :mod:`kbfm.knowledge.gene_symbols`.
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


def marker_sets(
    species: str = "human",
    cell_types: Iterable[str] | None = None,
    ontology: CellOntology | None = None,
) -> dict[str, list[str]]:
    """Return marker genes per Cell Ontology id.

    Parameters
    ----------
    species
        ``"human"`` or ``"mouse"`` (see :func:`marker_table`).
    cell_types
        Ids, labels or synonyms (one string is read as a list of one); default: every
        curated cell type. A requested type
        without markers of its own gets the union of the markers of its curated
        descendants, in table order (e.g. ``"leukocyte"`` or ``"lymphocyte"``). A type
        with neither maps to an empty list, and a warning is logged.
    ontology
        The :class:`~kbfm.knowledge.CellOntology` to resolve names (default: latest).

    Returns
    -------
    ``{cl_id: [genes]}``, in the order of ``cell_types``.

    Examples
    --------
    >>> marker_sets(cell_types=["B cell"])["CL:0000236"][:2]
    ['MS4A1', 'CD79A']
    """
    table = marker_table(species)
    curated: dict[str, list[str]] = {}
    for cid, gene in zip(table["cl_id"], table["gene"], strict=True):
        genes = curated.setdefault(cid, [])
        if gene not in genes:
            genes.append(gene)
    if cell_types is None:
        return curated
    if isinstance(cell_types, str):
        cell_types = [cell_types]
    from .cell_ontology import CellOntology

    onto = ontology or CellOntology.load()
    out: dict[str, list[str]] = {}
    for name in cell_types:
        cid = onto.term(name).id
        if cid in curated:
            out[cid] = curated[cid]
            continue
        below = set(onto.descendants(cid, include_self=False))
        union = [g for c, genes in curated.items() if c in below for g in genes]
        out[cid] = list(dict.fromkeys(union))
        if not out[cid]:
            logger.warning("no curated markers for %s (%s) or its descendants", name, cid)
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
