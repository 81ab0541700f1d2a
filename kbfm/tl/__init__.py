"""Tools: compute results into the AnnData (scanpy-style ``tl``)."""

from .annotate import annotate
from .deconvolve import deconvolve
from .embed_cells import embed_cells, genept_w_stream
from .embed_genes import embed_genes
from .evaluate import evaluate_annotation
from .query import query

__all__ = [
    "annotate",
    "deconvolve",
    "embed_cells",
    "embed_genes",
    "evaluate_annotation",
    "genept_w_stream",
    "query",
]
