"""Offline demo data: shipped by dependencies or generated here."""

from .pbmc import PBMC68K_LABEL_TO_CL, pbmc68k_reduced
from .spatial_synthetic import synthetic_spatial
from .synthetic import synthetic_expression

__all__ = ["PBMC68K_LABEL_TO_CL", "pbmc68k_reduced", "synthetic_expression", "synthetic_spatial"]
