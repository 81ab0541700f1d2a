"""Plots (matplotlib)."""

from .embedding import embedding_panels
from .proportions import proportions
from .qc import qc_metrics, qc_spatial

__all__ = ["embedding_panels", "proportions", "qc_metrics", "qc_spatial"]
