"""Knowledge: the Cell Ontology, gene descriptions, curated markers, gene symbols."""

from .cell_ontology import CellOntology, CellTypeTerm
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
from .markers import load_marker_file, marker_sets, marker_table

__all__ = [
    "GENE_KNOWLEDGE_SOURCES",
    "CellOntology",
    "CellTypeTerm",
    "GeneKnowledge",
    "GeneMatchReport",
    "alias_table_from_ncbi",
    "ensembl_to_symbol",
    "human_to_mouse",
    "load_gene_knowledge",
    "load_marker_file",
    "looks_like_ensembl",
    "marker_sets",
    "marker_table",
    "mouse_to_human",
    "normalize_symbols",
]
