"""Reading and writing: h5ad, Visium, legacy ST, SpatialData, slides and patches."""

from .h5ad import read_h5ad, write_h5ad
from .legacy_st import read_legacy_st
from .patches import PatchDataset, PatchSpec, extract_patches, tile_tissue, tissue_mask
from .slide import Slide, open_slide
from .spatialdata import read_spatialdata, write_spatialdata
from .visium import read_visium

__all__ = [
    "PatchDataset",
    "PatchSpec",
    "Slide",
    "extract_patches",
    "open_slide",
    "read_h5ad",
    "read_legacy_st",
    "read_spatialdata",
    "read_visium",
    "tile_tissue",
    "tissue_mask",
    "write_h5ad",
    "write_spatialdata",
]
