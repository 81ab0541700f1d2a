"""kbfm.tl.spatial_context: neighbour means per section, and their value for prediction."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from kbfm._errors import KbfmInputError
from kbfm.im.predict_expression import predict_expression
from kbfm.tl.spatial_context import ring_neighbours, spatial_context


def _grid(n: int = 20, step: float = 100.0) -> np.ndarray:
    return np.array([[x * step, y * step] for x in range(n) for y in range(n)], float)


def test_ring_neighbours_on_square_and_hex_grids():
    square = ring_neighbours(_grid(5))
    assert len(square[12]) == 9  # centre of a 5x5 grid: itself + 8 around
    assert len(square[0]) == 4  # corner
    hexagon = np.array(
        [[x + 0.5 * (y % 2), y * np.sqrt(3) / 2] for y in range(7) for x in range(7)], float
    )
    assert len(ring_neighbours(hexagon)[3 * 7 + 3]) == 7  # itself + 6 hexagon neighbours


def test_neighbours_stay_within_their_section():
    coords = _grid(4)
    adata = ad.AnnData(np.zeros((32, 1)))
    adata.obsm["spatial"] = np.vstack([coords, coords])  # two sections, same frame
    adata.obsm["X_image"] = np.repeat([[0.0], [10.0]], 16, axis=0)
    adata.obs["section"] = pd.Categorical(np.repeat(["a", "b"], 16))
    spatial_context(adata, groupby="section")
    ctx = adata.obsm["X_image_context"]
    assert ctx.shape == (32, 2)
    np.testing.assert_allclose(ctx[:16, 1], 0.0)
    np.testing.assert_allclose(ctx[16:, 1], 10.0)
    assert adata.uns["kbfm"]["spatial_context"]["groupby"] == "section"
    mixed = adata.copy()
    spatial_context(mixed)  # without groupby the sections bleed into each other
    assert mixed.obsm["X_image_context"][:16, 1].max() > 0


def test_context_recovers_a_smooth_signal_from_noisy_spots():
    rng = np.random.default_rng(0)
    coords = _grid(24)
    field = np.sin(coords[:, 0] / 500) + np.cos(coords[:, 1] / 700)
    n = len(coords)
    emb = np.column_stack([field + rng.normal(scale=1.5, size=n), rng.normal(size=(n, 7))])
    rates = np.column_stack([np.exp(3.0 + 0.8 * field), np.full((n, 2), 40.0)])
    counts = rng.poisson(rates)
    adata = ad.AnnData(counts.astype(np.float32))
    adata.var_names = ["A", "B", "C"]
    adata.obsm["spatial"] = coords
    adata.obsm["X_image"] = emb
    adata.obs["half"] = pd.Categorical(np.where(coords[:, 0] < 1200, "left", "right"))
    predict_expression(adata, use_rep="X_image", groupby="half", genes=["A"], n_pcs=8)
    plain = adata.uns["kbfm_predict_expression"]["mean_r_overall"]
    spatial_context(adata, groupby="half", rings=2)
    predict_expression(adata, use_rep="X_image_context", groupby="half", genes=["A"], n_pcs=8)
    with_context = adata.uns["kbfm_predict_expression"]["mean_r_overall"]
    assert with_context > plain + 0.05, (plain, with_context)


def test_bad_input_is_named():
    adata = ad.AnnData(np.zeros((4, 1)))
    adata.obsm["spatial"] = _grid(2)
    with pytest.raises(KbfmInputError, match="X_image"):
        spatial_context(adata)
    adata.obsm["X_image"] = np.zeros((4, 2))
    with pytest.raises(KbfmInputError, match="rings"):
        spatial_context(adata, rings=0)
    with pytest.raises(KbfmInputError, match="slide_id"):
        spatial_context(adata, groupby="slide_id")
