"""Trainable models: :class:`FusionModel` (expression + gene knowledge + histology)."""

from .._spatial_graph import spatial_adjacency
from .fusion import PRESETS, FusionConfig, FusionModel

__all__ = ["PRESETS", "FusionConfig", "FusionModel", "spatial_adjacency"]
