"""Tools: compute results into the AnnData (scanpy-style ``tl``)."""

from .annotate import annotate, annotate_llm, annotate_marker_score, annotate_zero_shot
from .combine_embeddings import combine_embeddings
from .deconvolve import deconvolve, deconvolve_knowledge, deconvolve_nnls, deconvolve_poisson
from .describe_regions import describe_regions
from .domains import domains, evaluate_domains
from .embed_cells import embed_cells, genept_w_stream
from .embed_genes import embed_genes
from .embed_image import embed_image
from .evaluate import evaluate_annotation
from .impute import impute
from .predict_expression import ExpressionPredictor, fit_expression_predictor, predict_expression
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
