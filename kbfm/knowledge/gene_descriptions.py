"""Gene descriptions from pluggable sources, and the text that gets embedded per gene.

Sources: ``atlas`` (the offline default: a card for every gene, composed from HGNC and
Ensembl names, consensus and curated cell-type markers and optional GO terms; see
:mod:`kbfm.knowledge.gene_cards`), NCBI ``gene_info`` joined to RefSeq summaries
(GenePT's choice), RefSeq summary tables, GenePT-style JSON, your own TSV/CSV, and
``builtin``: kbfm's curated marker facts joined to Cell Ontology definitions (223 marker
genes only, kept for comparison).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from .._errors import KbfmInputError, closest_names
from .._settings import settings
from ._gene_knowledge import GeneKnowledge, _read_table

__all__ = [
    "DEFAULT_GENE_KNOWLEDGE",
    "GENE_KNOWLEDGE_SOURCES",
    "GeneKnowledge",
    "load_gene_knowledge",
    "ncbi_cache_dir",
]


def ncbi_cache_dir(species: str = "human") -> Path:
    """Return where :func:`~kbfm.knowledge.ncbi_download.download_ncbi` puts NCBI files."""
    return settings.cache_dir / "knowledge" / "ncbi" / species


def _ncbi_cached(species: str = "human") -> GeneKnowledge:
    folder = ncbi_cache_dir(species)
    info = folder / "gene_info.gz"
    if not info.is_file():
        msg = (
            f"NCBI gene knowledge for {species} is not downloaded (looked in {folder}). "
            f"Run `kbfm knowledge download ncbi --species {species}` once while online."
        )
        raise KbfmInputError(msg)
    summaries = folder / "summaries.tsv"
    version = None
    meta = folder / "download.json"
    if meta.is_file():
        version = f"NCBI gene, downloaded {json.loads(meta.read_text()).get('date', '?')}"
    return GeneKnowledge.from_ncbi(
        info, summaries if summaries.is_file() else None, species=species, version=version
    )


def _atlas(species: str = "human") -> GeneKnowledge:
    from .gene_cards import atlas_knowledge

    return atlas_knowledge(species)


#: Named gene knowledge sources: ``name -> callable(species) -> GeneKnowledge``.
GENE_KNOWLEDGE_SOURCES: dict[str, Callable[[str], GeneKnowledge]] = {
    "atlas": _atlas,
    "builtin": GeneKnowledge.builtin,
    "ncbi": _ncbi_cached,
}
#: The offline default: gene cards for every gene (:mod:`kbfm.knowledge.gene_cards`).
DEFAULT_GENE_KNOWLEDGE = "atlas"


def load_gene_knowledge(
    source: str | os.PathLike | GeneKnowledge = DEFAULT_GENE_KNOWLEDGE, species: str = "human"
) -> GeneKnowledge:
    """Resolve a gene knowledge source given by name, path or object.

    Parameters
    ----------
    source
        A name in :data:`GENE_KNOWLEDGE_SOURCES` (``"atlas"``: gene cards for every gene,
        composed offline from HGNC/Ensembl names, cell-type markers and, when found, GO
        terms; ``"builtin"``: curated marker genes only; ``"ncbi"``, read from
        the files ``kbfm knowledge download ncbi`` stores under
        ``settings.cache_dir/knowledge/ncbi/<species>/``); a ``.json`` file (GenePT
        style); a ``.tsv``/``.csv`` file, plain or ``.gz`` (RefSeq format when it has
        ``symbol`` and ``summary`` columns, else ``symbol`` + ``description``); or a
        :class:`GeneKnowledge`, returned as is.
    species
        ``"human"`` or ``"mouse"``.

    Returns
    -------
    The :class:`GeneKnowledge`.

    Examples
    --------
    >>> load_gene_knowledge().source
    'atlas'
    """
    if isinstance(source, GeneKnowledge):
        return source
    if species not in ("human", "mouse"):
        msg = f"species must be 'human' or 'mouse', got {species!r}."
        raise KbfmInputError(msg)
    key = os.fspath(source)
    if key in GENE_KNOWLEDGE_SOURCES:
        return GENE_KNOWLEDGE_SOURCES[key](species)
    path = Path(key)
    stem = path.name.removesuffix(".gz")
    if stem.endswith(".json"):
        return GeneKnowledge.from_genept_json(path, species=species)
    if stem.endswith((".tsv", ".csv", ".txt")):
        header = set(_read_table(path, sep=None).columns)
        if {"symbol", "summary"} <= header:
            return GeneKnowledge.from_refseq_tsv(path, species=species)
        return GeneKnowledge.from_table(path, species=species)
    msg = (
        f"Unknown gene knowledge source {key!r}; use one of {sorted(GENE_KNOWLEDGE_SOURCES)}, "
        "a GenePT-style .json file, or a .tsv/.csv table."
        + closest_names(key, GENE_KNOWLEDGE_SOURCES)
    )
    raise KbfmInputError(msg)
