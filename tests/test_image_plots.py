"""Spatial scatter over the H&E and patch mosaics."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from _histology import spots_adata, texture_image, write_pyramid

from kbfm._errors import KbfmInputError
from kbfm.pl.spatial import patch_mosaic, spatial_scatter


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    return write_pyramid(tmp_path_factory.mktemp("slide") / "tex.tif", texture_image())


def test_scatter_over_image_and_mosaic(slide, tmp_path):
    adata = spots_adata(step=200)
    image = texture_image()[::4, ::4]
    adata.uns["spatial"] = {
        "tex": {
            "images": {"hires": image},
            "scalefactors": {"tissue_hires_scalef": 0.25, "spot_diameter_fullres": 110.0},
            "metadata": {"source_image_path": str(slide)},
        }
    }
    spatial_scatter(adata, "MARKER_N", save=tmp_path / "a.png")
    spatial_scatter(adata, "region", save=tmp_path / "b.png")
    fig = patch_mosaic(adata, n=6, ncols=3, color="region", save=tmp_path / "c.png")
    assert len(fig.axes) == 6
    assert all((tmp_path / f).stat().st_size > 1000 for f in ("a.png", "b.png", "c.png"))
    with pytest.raises(KbfmInputError, match="obsm keys"):
        spatial_scatter(adata, "NOPE")
    adata.obsm["X_image"] = np.zeros((adata.n_obs, 3))
    spatial_scatter(adata, "X_image:1")
