"""Trainable models: :class:`FusionModel` (expression + gene knowledge + histology)."""

from .fusion import PRESETS, FusionConfig, FusionModel, spatial_adjacency

__all__ = ["PRESETS", "FusionConfig", "FusionModel", "spatial_adjacency"]
