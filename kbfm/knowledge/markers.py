"""Curated cell-type marker facts and loaders for public marker tables.

``data/markers_human.tsv`` is kbfm's own curation: canonical markers per Cell Ontology
term, each row citing where the fact is reported (see ``data/README.md``). Mouse markers
are derived from it through the orthology tables in :mod:`kbfm.knowledge.gene_symbols`.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import pandas as pd

from .._errors import KbfmInputError

MARKER_TABLE_VERSION = "kbfm-markers-2026.11"
_DATA = Path(__file__).parent / "data"


@lru_cache(maxsize=2)
def _human_table() -> pd.DataFrame:
    return pd.read_csv(_DATA / "markers_human.tsv", sep="\t", dtype=str)


def marker_table(species: str = "human") -> pd.DataFrame:
    """Return the curated marker table: ``cl_id``, ``cell_type``, ``gene``, ``source``.

    Parameters
    ----------
    species
        ``"human"``, or ``"mouse"`` (genes translated by orthology; genes without a
        mouse ortholog are dropped).

    Returns
    -------
    A copy of the table.
    """
    table = _human_table().copy()
    if species == "human":
        return table
    if species != "mouse":
        msg = f"species must be 'human' or 'mouse', got {species!r}."
        raise KbfmInputError(msg)
    from .gene_symbols import human_to_mouse

    mapping = human_to_mouse(table["gene"].unique().tolist())
    table["gene"] = table["gene"].map(mapping)
    return table.dropna(subset=["gene"]).reset_index(drop=True)


def marker_sets(
    species: str = "human", cell_types: list[str] | None = None, ontology=None
) -> dict[str, list[str]]:
    """Return marker genes per Cell Ontology id.

    Parameters
    ----------
    species
        ``"human"`` or ``"mouse"``.
    cell_types
        Ids, labels or synonyms; default: every curated cell type. A requested type with
        no curated markers of its own gets the union of the markers of its curated
        descendants (e.g. ``"leukocyte"``); if it has none, it maps to an empty list.
    ontology
        A :class:`~kbfm.knowledge.CellOntology` (loaded when needed).

    Returns
    -------
    ``{cl_id: [genes]}``.

    Examples
    --------
    >>> marker_sets(cell_types=["B cell"])["CL:0000236"][:2]
    ['MS4A1', 'CD79A']
    """
    table = marker_table(species)
    curated: dict[str, list[str]] = {}
    for cid, genes in table.groupby("cl_id", sort=True)["gene"]:
        curated[cid] = list(dict.fromkeys(genes))
    if cell_types is None:
        return curated
    from .cell_ontology import CellOntology

    onto = ontology or CellOntology.load()
    out: dict[str, list[str]] = {}
    for name in cell_types:
        cid = onto.term(name).id
        if cid in curated:
            out[cid] = curated[cid]
            continue
        union: list[str] = []
        for desc in onto.descendants(cid, include_self=False):
            union += curated.get(desc, [])
        out[cid] = list(dict.fromkeys(union))
    return out


def load_marker_file(
    path: str | os.PathLike, kind: str = "panglaodb", species: str = "human"
) -> dict[str, list[str]]:
    """Read a public marker table into ``{cell type name: [genes]}``.

    Parameters
    ----------
    path
        A PanglaoDB TSV (columns ``species``, ``official gene symbol``, ``cell type``) or
        a CellMarker 2.0 CSV (columns ``Tissue``, ``CT``, ``Gene`` with comma-joined genes).
    kind
        ``"panglaodb"`` or ``"cellmarker"``.
    species
        Keep PanglaoDB rows for this species (``"human"`` -> ``Hs``, ``"mouse"`` -> ``Mm``).

    Returns
    -------
    Marker genes per cell type, in file order, without duplicates.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"Marker file not found: {path}"
        raise KbfmInputError(msg)
    if kind == "panglaodb":
        table = pd.read_csv(path, sep="\t", dtype=str)
        need = {"species", "official gene symbol", "cell type"}
        if not need <= set(table.columns):
            missing = sorted(need - set(table.columns))
            msg = f"{path} is not a PanglaoDB table: missing columns {missing}."
            raise KbfmInputError(msg)
        code = {"human": "Hs", "mouse": "Mm"}[species]
        table = table[table["species"].fillna("").str.split().apply(lambda s: code in s)]
        pairs = zip(table["cell type"], table["official gene symbol"], strict=True)
    elif kind == "cellmarker":
        table = pd.read_csv(path, dtype=str)
        need = {"CT", "Gene"}
        if not need <= set(table.columns):
            missing = sorted(need - set(table.columns))
            msg = f"{path} is not a CellMarker table: missing columns {missing}."
            raise KbfmInputError(msg)
        pairs = (
            (ct, gene.strip())
            for ct, genes in zip(table["CT"], table["Gene"].fillna(""), strict=True)
            for gene in genes.split(",")
            if gene.strip()
        )
    else:
        msg = f"Unknown marker file kind {kind!r}; choose 'panglaodb' or 'cellmarker'."
        raise KbfmInputError(msg)
    out: dict[str, list[str]] = {}
    for cell_type, gene in pairs:
        genes = out.setdefault(str(cell_type), [])
        if gene not in genes:
            genes.append(str(gene))
    return out
