"""Hostile inputs to pp/pl entry points: a specific KbfmInputError before any work, or a result.

Each case was a raw numpy/sklearn traceback, or a silently wrong result, before (issue 15).
"""

from __future__ import annotations

import numpy as np
import pytest

import kbfm
from kbfm._errors import KbfmInputError


@pytest.fixture
def spots():
    return kbfm.datasets.synthetic_spatial(n_side=10, n_genes=60, seed=1)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_auto_qc_refuses_nan_and_inf_counts(spots, value):
    spots.X = spots.X.astype(np.float32)
    spots.X[4, 7] = value
    before = spots.X.copy()
    with pytest.raises(KbfmInputError, match="1 NaN or infinite values"):
        kbfm.pp.auto_qc(spots)
    # nothing was written into the user's object
    assert not any(c.startswith("kbfm_qc") for c in spots.obs.columns)
    np.testing.assert_array_equal(spots.X, before)


def test_normalize_refuses_nan_naming_the_layer(spots):
    spots.layers["counts"] = spots.X.astype(np.float32)
    spots.layers["counts"][0, 0] = np.nan
    with pytest.raises(KbfmInputError, match=r"adata.layers\['counts'\] holds 1 NaN"):
        kbfm.pp.normalize(spots, layer="counts")


def test_backed_anndata_gets_a_clear_error(spots, tmp_path):
    import anndata as ad

    path = tmp_path / "spots.h5ad"
    spots.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    with pytest.raises(KbfmInputError, match=r"backed by .*spots.h5ad.*to_memory"):
        kbfm.pp.normalize(backed)
    with pytest.raises(KbfmInputError, match="to_memory"):
        kbfm.pp.spatially_variable_genes(backed)


@pytest.mark.parametrize("reader", ["auto_qc", "spatially_variable_genes", "qc_spatial"])
def test_nan_spot_coordinates_name_the_key_and_the_spots(spots, reader):
    spots.obsm["spatial"] = spots.obsm["spatial"].astype(float)
    spots.obsm["spatial"][[3, 8]] = np.nan
    match = r"obsm\['spatial'\] holds NaN or infinite coordinates for 2 spot\(s\).*spot3"
    with pytest.raises(KbfmInputError, match=match):
        if reader == "qc_spatial":
            kbfm.pl.qc_spatial(kbfm.pp.auto_qc(spots[:20].copy(), spatial=False, copy=True))
        else:
            getattr(kbfm.pp, reader)(spots)


def test_non_numeric_spot_coordinates(spots):
    spots.obsm["spatial"] = np.array([["a", "b"]] * spots.n_obs, dtype=object)
    with pytest.raises(KbfmInputError, match="must hold numbers"):
        kbfm.pp.spatially_variable_genes(spots)


def test_repeated_gene_names_are_refused_with_the_fix(spots):
    names = list(spots.var_names)
    names[5] = names[6] = "DUP1"
    spots.var_names = names
    with pytest.raises(KbfmInputError, match=r"1 repeated gene name\(s\).*DUP1.*make_unique"):
        kbfm.pp.spatially_variable_genes(spots)


@pytest.mark.parametrize("case", ["one_cell", "all_zero"])
def test_degenerate_data_gives_a_result_not_a_crash(spots, case):
    data = spots[:1].copy() if case == "one_cell" else spots.copy()
    if case == "all_zero":
        data.X = data.X * 0
    qc = kbfm.pp.auto_qc(data, copy=True)
    assert qc.n_obs == data.n_obs and "kbfm_qc_pass" in qc.obs
    if case == "all_zero":
        # every spot is empty: QC must not pass them
        assert not qc.obs["kbfm_qc_pass"].any()
    normed = kbfm.pp.normalize(data, copy=True)
    assert np.isfinite(
        np.asarray(normed.X.todense() if hasattr(normed.X, "todense") else normed.X)
    ).all()
