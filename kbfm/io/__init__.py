"""Reading and writing: h5ad helpers that never leave a half-written file."""

from .h5ad import read_h5ad, write_h5ad

__all__ = ["read_h5ad", "write_h5ad"]
