"""Knowledge: the Cell Ontology, curated markers, gene descriptions and gene symbols.

Everything here works offline from files that ship with kbfm or its dependencies,
except :func:`download_ncbi`, which fetches NCBI gene summaries once for later use.
"""

from __future__ import annotations

from .cell_ontology import GENERIC_TERMS, CellOntology, CellTypeTerm, available_versions
from .gene_descriptions import GENE_KNOWLEDGE_SOURCES, GeneKnowledge, load_gene_knowledge
from .gene_symbols import (
    GeneMatchReport,
    alias_table_from_ncbi,
    ensembl_to_symbol,
    human_to_mouse,
    looks_like_ensembl,
    mouse_to_human,
    normalize_symbols,
)
from .go_annotations import (
    GODatabases,
    GOTerm,
    find_go_databases,
    go_annotations,
    go_status,
    go_term_definitions,
)
from .llm_descriptions import generate_gene_descriptions
from .markers import MARKER_TABLE_VERSION, load_marker_file, marker_sets, marker_table
from .ncbi_download import download_ncbi

__all__ = [
    "GENERIC_TERMS",
    "GENE_KNOWLEDGE_SOURCES",
    "MARKER_TABLE_VERSION",
    "CellOntology",
    "CellTypeTerm",
    "GODatabases",
    "GOTerm",
    "GeneKnowledge",
    "GeneMatchReport",
    "alias_table_from_ncbi",
    "available_versions",
    "download_ncbi",
    "ensembl_to_symbol",
    "find_go_databases",
    "generate_gene_descriptions",
    "go_annotations",
    "go_status",
    "go_term_definitions",
    "human_to_mouse",
    "load_gene_knowledge",
    "load_marker_file",
    "looks_like_ensembl",
    "marker_sets",
    "marker_table",
    "mouse_to_human",
    "normalize_symbols",
]
