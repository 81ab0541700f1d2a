"""Plots (matplotlib)."""

from .embedding import embedding_panels
from .proportions import proportions
from .qc import qc_metrics, qc_spatial
from .qc_report import write_qc_report
from .spatial import patch_mosaic, spatial_scatter

__all__ = [
    "embedding_panels",
    "patch_mosaic",
    "proportions",
    "qc_metrics",
    "qc_spatial",
    "spatial_scatter",
    "write_qc_report",
]
