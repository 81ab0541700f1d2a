"""Image work (squidpy's ``im``): H&E patches to embeddings, and expression from them.

- :func:`embed_image`: embed the H&E around every spot with a pathology encoder
  (``obsm["X_image"]``), with optional context rings, stain normalisation and TTA.
- :func:`predict_expression`: cross-validated expression prediction from an image
  embedding (HEST-Benchmark protocol); :func:`fit_expression_predictor` fits the
  :class:`ExpressionPredictor` to apply to new slides.
- :func:`combine_embeddings`: concatenate standardised embedding blocks.

The same functions are reachable as ``kbfm.tl.embed_image`` and so on.
"""

from .combine_embeddings import combine_embeddings
from .embed_image import embed_image
from .predict_expression import ExpressionPredictor, fit_expression_predictor, predict_expression

__all__ = [
    "ExpressionPredictor",
    "combine_embeddings",
    "embed_image",
    "fit_expression_predictor",
    "predict_expression",
]
