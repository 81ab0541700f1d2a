"""Tools: compute results into the AnnData (scanpy-style ``tl``).

Image functions live in :mod:`kbfm.im` and scores in :mod:`kbfm.metrics`; the names
below (``embed_image``, ``predict_expression``, ``evaluate_annotation`` ...) are the
same function objects, kept here so that ``kbfm.tl`` lists every analysis step.
"""

from ..im import (
    ExpressionPredictor,
    combine_embeddings,
    embed_image,
    fit_expression_predictor,
    predict_expression,
)
from ..metrics import evaluate_annotation, evaluate_domains
from .annotate import annotate, annotate_llm, annotate_marker_score, annotate_zero_shot
from .deconvolve import deconvolve, deconvolve_knowledge, deconvolve_nnls, deconvolve_poisson
from .describe_regions import describe_regions
from .domains import domains
from .embed_cells import embed_cells, genept_w_stream
from .embed_genes import embed_genes
from .impute import impute
from .query import query
from .spatial_context import spatial_context

__all__ = [
    "ExpressionPredictor",
    "annotate",
    "annotate_llm",
    "annotate_marker_score",
    "annotate_zero_shot",
    "combine_embeddings",
    "deconvolve",
    "deconvolve_knowledge",
    "deconvolve_nnls",
    "deconvolve_poisson",
    "describe_regions",
    "domains",
    "embed_cells",
    "embed_genes",
    "embed_image",
    "evaluate_annotation",
    "evaluate_domains",
    "fit_expression_predictor",
    "genept_w_stream",
    "impute",
    "predict_expression",
    "query",
    "spatial_context",
]
