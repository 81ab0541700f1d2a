"""HEST-protocol pieces of predict_expression."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from kbfm._errors import KbfmInputError
from kbfm.im.predict_expression import (
    normalized_expression,
    pearson_per_gene,
    predict_expression,
    top_variable_genes,
)


def _toy(n=300, seed=0):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, 16))
    signal = np.exp(4.0 + 0.7 * emb[:, 0])  # log-expression linear in the embedding
    counts = rng.poisson(np.column_stack([signal, np.full((n, 5), 50.0)]))
    adata = ad.AnnData(counts.astype(np.float32))
    adata.var_names = ["SIG"] + [f"G{i}" for i in range(5)]
    adata.obsm["X_image"] = emb
    adata.obs["section"] = pd.Categorical(np.repeat(["a", "b", "c"], n // 3))
    return adata


def test_pearson_per_gene_matches_numpy_and_flags_constants():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    b[:, 2] = 1.0
    r = pearson_per_gene(a, b)
    assert r[0] == pytest.approx(np.corrcoef(a[:, 0], b[:, 0])[0, 1])
    assert np.isnan(r[2])


def test_log1p_normalisation_and_variable_genes():
    adata = _toy()
    X, genes = normalized_expression(adata)
    totals = np.expm1(X).sum(1)
    np.testing.assert_allclose(totals, 1e4, rtol=1e-4)
    assert top_variable_genes(X, genes, 1) == ["SIG"]


def test_leave_one_section_out_with_hest_alpha():
    adata = _toy()
    predict_expression(adata, groupby="section", n_genes=2)
    res = adata.uns["kbfm_predict_expression"]
    assert set(res["mean_r"]) == {"a", "b", "c"}
    assert res["pearson"].loc["SIG"].min() > 0.7
    assert res["scheme"] == "leave-one-group-out"
    assert adata.uns["kbfm"]["predict_expression"]["alpha"] == "100/(n_pcs*n_genes)"
    assert adata.obsm["kbfm_predicted_expression"].shape == (adata.n_obs, 2)


def test_kfold_without_groups_is_labelled_optimistic():
    adata = _toy()
    predict_expression(adata, n_genes=2, n_splits=3)
    assert "optimistic" in adata.uns["kbfm_predict_expression"]["scheme"]


def test_bad_inputs():
    adata = _toy()
    with pytest.raises(KbfmInputError, match="embed_image"):
        predict_expression(adata, use_rep="X_missing")
    with pytest.raises(KbfmInputError, match="not a column"):
        predict_expression(adata, groupby="slide")
    adata.obs["one"] = "x"
    with pytest.raises(KbfmInputError, match=">= 2"):
        predict_expression(adata, groupby="one")
    with pytest.raises(KbfmInputError, match="not in var_names"):
        predict_expression(adata, genes=["NOPE"], groupby="section")


def test_kfold_needs_as_many_spots_as_folds():
    adata = _toy(n=6)
    with pytest.raises(KbfmInputError, match="integer >= 2"):
        predict_expression(adata, n_genes=2, n_splits=1)
    with pytest.raises(KbfmInputError, match="needs at least 10 spots; adata has 6"):
        predict_expression(adata, n_genes=2, n_splits=10)
    small = adata[:4].copy()
    predict_expression(small, n_genes=2, n_pcs=2, n_splits=2)  # 2 spots per fold: fine
    pred = small.obsm["kbfm_predicted_expression"]  # union of each fold's top-2 genes
    assert pred.shape[0] == 4 and 2 <= pred.shape[1] <= 4
    assert "kbfm_predicted_expression" not in adata.obsm  # refusals left adata as it was
