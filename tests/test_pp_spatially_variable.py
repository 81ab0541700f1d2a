"""Spatially variable genes (Moran's I) on generated banded tissue."""

from __future__ import annotations

import numpy as np
import pytest

import kbfm
from kbfm._errors import KbfmInputError


@pytest.fixture
def bands():
    # 4 horizontal bands, 8 marker genes each (GENE0-GENE31); the rest are noise
    return kbfm.datasets.synthetic_spatial(n_side=20, n_genes=80, seed=0)


def test_band_markers_are_the_spatially_variable_genes(bands):
    kbfm.pp.spatially_variable_genes(bands, n_top_genes=32)
    flagged = set(bands.var_names[bands.var["kbfm_spatially_variable"]])
    markers = {f"GENE{i}" for i in range(32)}
    assert len(flagged & markers) >= 30
    scores = bands.var["kbfm_morans_i"]
    noise = scores[[g for g in bands.var_names if g not in markers]]
    # the generated values are integer counts, so Moran's I is computed on log-normalised
    # values (one counts rule, kbfm._scale): markers ~0.21, noise ~0.02
    assert scores[list(markers)].median() > 0.15 and noise.abs().median() < 0.05
    assert bands.uns["kbfm"]["spatially_variable_genes"]["n_top_genes"] == 32


def test_not_inplace_returns_a_table_and_leaves_adata_alone(bands):
    table = kbfm.pp.spatially_variable_genes(bands, n_top_genes=5, inplace=False)
    assert table.shape == (80, 2) and int(table["kbfm_spatially_variable"].sum()) == 5
    assert "kbfm_morans_i" not in bands.var


def test_bad_input(bands):
    with pytest.raises(KbfmInputError, match="n_top_genes"):
        kbfm.pp.spatially_variable_genes(bands, n_top_genes=0)
    flat = bands.copy()
    del flat.obsm["spatial"]
    with pytest.raises(KbfmInputError, match="obsm\\['spatial'\\]"):
        kbfm.pp.spatially_variable_genes(flat)


def test_constant_genes_score_nan_and_rank_last(bands):
    bands.X = np.log1p(bands.X)  # log values are used as they are, so a constant stays one
    bands.X[:, 0] = 1.5
    scores = kbfm.pp.morans_i(bands)
    assert np.isnan(scores.iloc[0])
    kbfm.pp.spatially_variable_genes(bands, n_top_genes=79)
    assert not bands.var["kbfm_spatially_variable"].iloc[0]
