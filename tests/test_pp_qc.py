"""auto_qc and scale detection on generated spot grids with known failures."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

from kbfm._errors import KbfmInputError
from kbfm.pp._detect import detect_scale
from kbfm.pp.auto_qc import auto_qc, qc_table


def hex_grid(n_rows: int, n_cols: int) -> np.ndarray:
    """Visium-like hexagonal spot centres, spacing 100."""
    pts = [
        (100.0 * c + (50.0 if r % 2 else 0.0), 100.0 * np.sqrt(3) / 2 * r)
        for r in range(n_rows)
        for c in range(n_cols)
    ]
    return np.array(pts)


def make_spots(
    n_rows: int = 12, n_cols: int = 12, *, species: str = "human", seed: int = 0
) -> AnnData:
    """Counts for a grid of spots: 190 ordinary genes, 5 mito, 4 ribo, 1 hb."""
    rng = np.random.default_rng(seed)
    coords = hex_grid(n_rows, n_cols)
    n = len(coords)
    if species == "human":
        special = ["MT-CO1", "MT-CO2", "MT-ND1", "MT-ATP6", "MT-CYB", "RPL3", "RPS6", "RPL13A"]
        special += ["RPLP0", "HBB"]
        genes = [f"GENE{i}" for i in range(190)] + special
    else:
        special = ["mt-Co1", "mt-Co2", "mt-Nd1", "mt-Atp6", "mt-Cytb", "Rpl3", "Rps6", "Rpl13a"]
        special += ["Rplp0", "Hbb-bs"]
        genes = [f"Gene{i}" for i in range(190)] + special
    base = rng.gamma(1.0, 1.0, size=len(genes))
    base[190:195] *= 0.5  # mito ~ a few percent
    base[195:199] *= 4.0  # ribosomal ~ 10 percent
    base[199] = 0.01
    profile = base / base.sum()
    depth = rng.lognormal(np.log(3000), 0.25, size=n)
    X = rng.poisson(depth[:, None] * profile[None, :]).astype(np.float32)
    adata = AnnData(sp.csr_matrix(X))
    adata.var_names = genes
    adata.obs_names = [f"spot{i}" for i in range(n)]
    adata.obsm["spatial"] = coords
    return adata


def test_detect_scale_tells_counts_normalized_log_scaled():
    rng = np.random.default_rng(0)
    counts = rng.poisson(5, size=(50, 30)).astype(float)
    norm = counts / counts.sum(1, keepdims=True) * 1e4
    assert detect_scale(counts).kind == "counts"
    assert detect_scale(sp.csr_matrix(counts)).kind == "counts"
    assert detect_scale(norm).kind == "normalized"
    assert detect_scale(np.log1p(norm)).kind == "log"
    assert detect_scale(norm - norm.mean(0)).kind == "scaled"


def test_auto_qc_flags_injected_failures_with_reasons_and_keeps_everything():
    adata = make_spots()
    low, mito = [10, 50], [20, 70]
    X = adata.X.toarray()
    X[low] = np.floor(X[low] * 0.05)
    X[mito, 190:195] += 0.3 * X[mito].sum(1, keepdims=True) / 5
    adata.X = sp.csr_matrix(np.round(X))
    auto_qc(adata)
    table = qc_table(adata)
    assert adata.n_obs == 144  # nothing removed unless asked
    for i in low:
        assert "low_counts" in table["reason"].iloc[i]
    for i in mito:
        assert "high_mito" in table["reason"].iloc[i]
    failed = set(np.flatnonzero(~table["pass"].to_numpy()))
    assert set(low) | set(mito) <= failed
    assert len(failed) <= 10  # few false alarms on clean spots
    step = adata.uns["kbfm"]["auto_qc"]
    assert step["input_scale"] == "counts"
    assert step["species"] == "human"
    assert step["thresholds"]["all"]["pct_mito"][1] > 0


def test_auto_qc_remove_drops_failing_spots():
    adata = make_spots()
    X = adata.X.toarray()
    X[5] = np.floor(X[5] * 0.02)
    adata.X = sp.csr_matrix(X)
    out = auto_qc(adata, remove=True, copy=True)
    assert "spot5" not in out.obs_names
    assert out.obs["kbfm_qc_pass"].all()
    assert adata.n_obs == 144  # the original is untouched with copy=True


def test_auto_qc_thresholds_are_per_batch():
    a, b = make_spots(seed=1), make_spots(seed=2)
    rng = np.random.default_rng(3)
    # batch b is sequenced 10x shallower: without batches it would all be flagged low.
    b.X = sp.csr_matrix(rng.binomial(a.X.toarray().astype(int), 0.1).astype(np.float32))
    b.obsm["spatial"] = a.obsm["spatial"] + 10_000
    a.obs["sample"], b.obs["sample"] = "a", "b"
    b.obs_names = [f"b{i}" for i in range(b.n_obs)]
    adata = ad.concat([a, b])
    auto_qc(adata, batch_key="sample")
    per_batch = qc_table(adata).groupby(adata.obs["sample"])["low_counts"].mean()
    assert per_batch.max() < 0.1
    thr = adata.uns["kbfm"]["auto_qc"]["thresholds"]
    assert thr["b"]["total_counts"][0] < thr["a"]["total_counts"][0]


def test_auto_qc_mouse_symbols():
    adata = make_spots(species="mouse")
    X = adata.X.toarray()
    X[3, 190:195] += 400
    adata.X = sp.csr_matrix(X)
    auto_qc(adata)
    assert adata.uns["kbfm"]["auto_qc"]["species"] == "mouse"
    assert adata.obs["kbfm_qc_pct_mito"].iloc[3] > 5
    assert adata.obs["kbfm_qc_high_mito"].iloc[3]


def test_auto_qc_spatial_isolated_edge_and_outside_tissue():
    adata = make_spots()
    coords = adata.obsm["spatial"].copy()
    coords[0] = [5000.0, 5000.0]  # far away from the tissue
    adata.obsm["spatial"] = coords
    adata.obs["in_tissue"] = 1
    adata.obs.loc["spot30", "in_tissue"] = 0
    auto_qc(adata)
    table = qc_table(adata)
    assert table.loc["spot0", "isolated"]
    assert "not_in_tissue" in table.loc["spot30", "reason"]
    assert table["edge"].sum() > 20  # the grid border
    assert not table.loc["spot65", "edge"]  # an interior spot
    assert table["pass"][table["edge"]].mean() > 0.8  # edges are reported, not failed


def test_auto_qc_doublet_like_spot_is_a_local_outlier():
    adata = make_spots(seed=4)
    X = adata.X.toarray()
    X[77] = X[77] + X[3] + X[140] + X[100]  # four spots in one
    adata.X = sp.csr_matrix(X)
    auto_qc(adata)
    assert adata.obs["kbfm_qc_local_counts_outlier"].iloc[77]


def test_auto_qc_adapts_to_log_values_and_refuses_scaled(caplog):
    adata = make_spots()
    X = adata.X.toarray()
    logged = np.log1p(X / X.sum(1, keepdims=True) * 1e4)
    adata.X = logged
    with caplog.at_level(logging.WARNING):
        auto_qc(adata)
    assert "does not hold raw counts" in caplog.text
    step = adata.uns["kbfm"]["auto_qc"]
    assert step["input_scale"] == "log"
    assert "expm1" in step["adaptation"]
    assert not adata.obs["kbfm_qc_low_counts"].any()
    adata.layers["counts"] = X
    auto_qc(adata)
    assert adata.uns["kbfm"]["auto_qc"]["counts_source"] == "adata.layers['counts']"
    with pytest.raises(KbfmInputError, match="does not hold raw counts"):
        auto_qc(AnnData(logged), on_not_counts="raise")
    with pytest.raises(KbfmInputError, match="scaled"):
        auto_qc(AnnData(logged - logged.mean(0)))


def test_auto_qc_bad_arguments_name_the_fix():
    adata = make_spots()
    with pytest.raises(KbfmInputError, match=r"batch_key 'smaple'.*Did you mean"):
        adata.obs["sample"] = "a"
        auto_qc(adata, batch_key="smaple")
    with pytest.raises(KbfmInputError, match="unknown flags"):
        auto_qc(adata, fail_on=["low_count"])
    with pytest.raises(KbfmInputError, match=r"run kbfm\.pp\.auto_qc"):
        qc_table(make_spots())


def test_qc_table_columns():
    adata = make_spots()
    auto_qc(adata)
    table = qc_table(adata)
    assert isinstance(table, pd.DataFrame)
    for col in ("total_counts", "n_genes", "pct_mito", "pct_ribo", "pct_hb", "pass", "reason"):
        assert col in table.columns
