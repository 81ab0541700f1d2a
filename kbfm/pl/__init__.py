"""Plots (matplotlib)."""

from .embedding import embedding_panels

__all__ = ["embedding_panels"]
