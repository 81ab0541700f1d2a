"""normalize(method="auto") picks a method from the data and records why."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from anndata import AnnData

from kbfm._errors import KbfmInputError
from kbfm.pp.normalize import normalize


def counts(depth_sd: float = 0.2, seed: int = 0) -> AnnData:
    rng = np.random.default_rng(seed)
    profile = rng.gamma(1.0, 1.0, 80)
    profile /= profile.sum()
    depth = rng.lognormal(np.log(2000), depth_sd, size=120)
    X = rng.poisson(depth[:, None] * profile[None, :]).astype(np.float32)
    return AnnData(sp.csr_matrix(X))


def test_auto_chooses_log1p_for_even_library_sizes_and_keeps_counts():
    adata = counts()
    raw = adata.X.copy()
    normalize(adata)
    step = adata.uns["kbfm"]["normalize"]
    assert step["method"] == "log1p"
    assert "library size + log1p" in step["reason"]
    np.testing.assert_allclose(adata.layers["counts"].toarray(), raw.toarray())
    sums = np.expm1(adata.X.toarray()).sum(1)
    np.testing.assert_allclose(sums, 1e4, rtol=1e-3)


def test_auto_chooses_pearson_when_library_sizes_vary_strongly():
    adata = counts(depth_sd=1.2)
    normalize(adata)
    step = adata.uns["kbfm"]["normalize"]
    assert step["method"] == "pearson"
    assert "Pearson" in step["reason"]
    assert np.asarray(adata.X).min() < 0  # residuals


def test_auto_leaves_log_data_alone_and_logs_normalised_data():
    adata = counts()
    X = adata.X.toarray()
    norm = X / X.sum(1, keepdims=True) * 1e4
    logged = AnnData(np.log1p(norm))
    before = logged.X.copy()
    normalize(logged)
    assert logged.uns["kbfm"]["normalize"]["method"] == "none"
    np.testing.assert_array_equal(logged.X, before)
    normed = AnnData(norm.copy())
    normalize(normed)
    assert normed.uns["kbfm"]["normalize"]["method"] == "log1p"
    np.testing.assert_allclose(normed.X, np.log1p(norm), rtol=1e-5)


def test_explicit_method_and_errors():
    adata = counts()
    out = normalize(adata, method="pearson", copy=True)
    assert "requested by the caller" in out.uns["kbfm"]["normalize"]["reason"]
    assert "kbfm" not in adata.uns
    with pytest.raises(KbfmInputError, match="Did you mean"):
        normalize(adata, method="pearsn")
    logged = AnnData(np.log1p(adata.X.toarray() / 7.3))
    with pytest.raises(KbfmInputError, match="already log-transformed"):
        normalize(logged, method="log1p")
    with pytest.raises(KbfmInputError, match="scaled"):
        normalize(AnnData(logged.X - logged.X.mean(0)))
