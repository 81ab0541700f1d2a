"""The fitted histology pipeline: no held-out leakage, exact save/load, reuse on new slides."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from kbfm._errors import KbfmInputError
from kbfm.im.combine_embeddings import FeatureScaling, combine_embeddings, fit_feature_scaling
from kbfm.im.predict_expression import (
    ExpressionPredictor,
    _fold_models,
    fit_expression_predictor,
    input_blocks,
    normalized_expression,
    predict_expression,
    top_variable_genes,
)
from kbfm.metrics import pearson_per_gene
from kbfm.tl.spatial_context import spatial_context

SECTIONS = ("a", "b", "c")


def _slides(n_side=8, seed=0):
    """Three sections on a square grid; two embeddings; SIG depends on the first."""
    rng = np.random.default_rng(seed)
    grid = np.array([[x, y] for x in range(n_side) for y in range(n_side)], float) * 100
    parts = []
    for k, name in enumerate(SECTIONS):
        n = len(grid)
        emb = rng.normal(size=(n, 12))
        texture = rng.normal(loc=5.0, scale=3.0, size=(n, 4))
        signal = np.exp(3.0 + 0.8 * emb[:, 0])
        rates = np.column_stack([signal, np.full((n, 6), 40.0), rng.uniform(5, 60, size=(n, 1))])
        part = ad.AnnData(rng.poisson(rates).astype(np.float32))
        part.var_names = ["SIG", *[f"G{i}" for i in range(6)], "VAR"]
        part.obs_names = [f"{name}_{i}" for i in range(n)]
        part.obsm["X_image"] = emb.astype(np.float32)
        part.obsm["X_ct"] = texture.astype(np.float32)
        part.obsm["spatial"] = grid + 10_000 * k
        parts.append(part)
    adata = ad.concat(parts, label="section", keys=list(SECTIONS))
    return adata


def _fold(adata, held_out, **kw):
    settings = {
        "rings": kw.pop("rings", 0.0),
        "scale": None,
        "n_pcs": 8,
        "alpha": None,
        "layer": None,
        "normalize": "auto",
        "n_splits": 5,
        "seed": 0,
    }
    for fold, *_ in _fold_models(adata, groupby="section", settings=settings, **kw):
        if fold.name == held_out:
            return fold.model
    raise AssertionError(held_out)


def _same_fit(m1: ExpressionPredictor, m2: ExpressionPredictor) -> None:
    assert m1.genes == m2.genes
    np.testing.assert_array_equal(m1.scaling.mean, m2.scaling.mean)
    np.testing.assert_array_equal(m1.scaling.std, m2.scaling.std)
    np.testing.assert_array_equal(m1.pca_components, m2.pca_components)
    np.testing.assert_array_equal(m1.ridge_coef, m2.ridge_coef)


def test_held_out_section_cannot_change_genes_scaling_or_pca():
    adata = _slides()
    kw = {"use_rep": ["X_image", "X_ct"], "genes": None, "n_genes": 3, "rings": 1.0}
    before = _fold(adata, "c", **kw)
    # perturb the held-out section massively: a flat gene becomes hugely variable there,
    # and its embeddings move by orders of magnitude
    hostile = adata.copy()
    in_c = (hostile.obs["section"] == "c").to_numpy()
    g3 = list(hostile.var_names).index("G3")
    factor = np.random.default_rng(1).choice([0.0, 1000.0], size=(in_c.sum(), 1))
    hostile.X[np.ix_(in_c, [g3])] *= factor
    hostile.obsm["X_image"][in_c] = hostile.obsm["X_image"][in_c] * 1000 + 50
    hostile.obsm["X_ct"][in_c] = -hostile.obsm["X_ct"][in_c] * 300
    X, names = normalized_expression(hostile)
    assert "G3" in top_variable_genes(X, names, 3)  # selection over all spots would leak
    after = _fold(hostile, "c", **kw)
    assert "G3" not in after.genes
    _same_fit(before, after)
    # the other folds train on c, so they do see the change (the test can tell)
    assert "G3" in _fold(hostile, "a", **kw).genes
    # the public result records each fold's genes
    predict_expression(hostile, use_rep=["X_image", "X_ct"], groupby="section", n_genes=3)
    res = hostile.uns["kbfm_predict_expression"]
    assert res["genes_per_fold"]["c"] == before.genes
    assert "G3" in res["genes_per_fold"]["a"]


def test_each_fold_is_scored_on_its_own_genes():
    adata = _slides()
    predict_expression(adata, use_rep="X_image", groupby="section", n_genes=2, n_pcs=8)
    res = adata.uns["kbfm_predict_expression"]
    table, per_fold = res["pearson"], res["genes_per_fold"]
    assert res["gene_selection"].startswith("top-2 by variance on each fold's training")
    assert list(table.index) == res["genes"]
    assert set(res["genes"]) == {g for gs in per_fold.values() for g in gs}
    for fold, fold_genes in per_fold.items():
        assert len(fold_genes) == 2
        assert table[fold].notna().sum() == 2
        assert res["mean_r"][fold] == pytest.approx(table.loc[fold_genes, fold].mean())
    assert res["mean_r_overall"] == pytest.approx(np.mean(list(res["mean_r"].values())))
    predicted = adata.obsm["kbfm_predicted_expression"]
    in_a = (adata.obs["section"] == "a").to_numpy()
    assert predicted.loc[in_a, per_fold["a"]].notna().all().all()
    others = [g for g in res["genes"] if g not in per_fold["a"]]
    assert predicted.loc[in_a, others].isna().all().all()


def test_fixed_genes_are_used_in_every_fold_in_the_given_order():
    adata = _slides()
    genes = ["VAR", "SIG"]
    predict_expression(adata, groupby="section", genes=genes, n_pcs=8)
    res = adata.uns["kbfm_predict_expression"]
    assert res["genes"] == genes and res["gene_selection"] == "fixed (genes=)"
    assert all(g == genes for g in res["genes_per_fold"].values())
    assert res["pearson"].loc["SIG"].min() > 0.3
    with pytest.raises(KbfmInputError, match="NOPE, ALSO_NOPE"):
        predict_expression(adata, groupby="section", genes=["SIG", "NOPE", "ALSO_NOPE"])


def test_context_blocks_match_spatial_context():
    adata = _slides()
    spatial_context(adata, use_rep="X_ct", groupby="section", key_added="ring")
    (block,) = input_blocks(adata, "X_ct", rings=1.0, groupby="section")
    np.testing.assert_array_equal(block, adata.obsm["ring"].astype(np.float64))


def test_combine_embeddings_reuses_fitted_scaling():
    adata = _slides()
    train = adata[adata.obs["section"] != "c"].copy()
    new = adata[adata.obs["section"] == "c"].copy()
    scaling = fit_feature_scaling(train, ["X_image", "X_ct"])
    combine_embeddings(train, ["X_image", "X_ct"])  # own statistics = the fitted ones here
    own = scaling.transform([train.obsm["X_image"], train.obsm["X_ct"]]).astype(np.float32)
    np.testing.assert_array_equal(train.obsm["X_combined"], own)
    combine_embeddings(new, ["X_image", "X_ct"], scaling=scaling, key_added="fitted")
    assert new.uns["kbfm"]["combine_embeddings"]["scaling"] == "given"
    combine_embeddings(new, ["X_image", "X_ct"], key_added="own")
    blocks = [new.obsm["X_image"], new.obsm["X_ct"]]
    np.testing.assert_array_equal(new.obsm["fitted"], scaling.transform(blocks).astype(np.float32))
    assert not np.allclose(new.obsm["fitted"], new.obsm["own"])  # own stats differ
    with pytest.raises(KbfmInputError, match="fitted on"):
        combine_embeddings(new, ["X_ct", "X_image"], scaling=scaling)
    with pytest.raises(KbfmInputError, match="features"):
        FeatureScaling.fit([np.ones((3, 2))], ["A"]).transform([np.ones((3, 5))])


def test_feature_nearly_constant_in_training_cannot_swamp_a_new_slide():
    """HER2ST C2 case: a feature with std ~1e-4 on the training spots varied on C2 and
    reached |z| ~ 1,100 there; clipped to the training range it stays bounded."""
    rng = np.random.default_rng(3)
    train_block = rng.normal(size=(50, 4))
    train_block[:, 2] = 0.5 + rng.normal(scale=1e-4, size=50)
    new_block = rng.normal(size=(20, 4))
    new_block[:, 2] = rng.uniform(0.0, 1.0, size=20)  # varies where training did not
    scaling = FeatureScaling.fit([train_block], ["A"])
    assert np.all(scaling.low <= train_block.min(axis=0))
    assert np.all(scaling.high >= train_block.max(axis=0))
    z_train = scaling.transform([train_block]) * np.sqrt(4)
    z_new = scaling.transform([new_block]) * np.sqrt(4)
    bound = np.abs(z_train).max(axis=0)
    assert np.all(np.abs(z_new) <= bound + 1e-9)  # never beyond what training reached
    assert bound[2] < 10  # while unclipped it would be ~5,000
    raw = (new_block[:, 2] - scaling.mean[2]) / scaling.std[2]
    assert np.abs(raw).max() > 1_000
    # the fitting spots are transformed exactly as before the clip existed
    np.testing.assert_allclose(
        z_train, (train_block - train_block.mean(0)) / train_block.std(0), rtol=1e-12
    )


def test_new_slide_is_predicted_with_the_training_pipeline():
    adata = _slides()
    train = adata[adata.obs["section"] != "c"].copy()
    new = adata[adata.obs["section"] == "c"].copy()
    kw = {"use_rep": ["X_image", "X_ct"], "rings": 1.0, "n_pcs": 32, "n_genes": 3}
    model = fit_expression_predictor(train, groupby="section", **kw)
    assert model.scaling is not None and model.rings == 1.0
    assert model.normalize == "log1p_cp10k"
    model.predict(new)
    # the same spots inside a bigger object get the same predictions: nothing is refitted
    # on the object that is predicted
    model.predict(adata, groupby="section", key_added="all")
    in_c = (adata.obs["section"] == "c").to_numpy()
    np.testing.assert_array_equal(
        new.obsm["kbfm_predicted_expression"].to_numpy(), adata.obsm["all"].to_numpy()[in_c]
    )
    # score = Pearson r against the slide's own counts, normalised as in training
    r = model.score(new)
    X, names = normalized_expression(new)
    measured = np.asarray(X[:, [names.index(g) for g in model.genes]])
    expected = pearson_per_gene(measured, new.obsm["kbfm_predicted_expression"].to_numpy())
    np.testing.assert_allclose(r.to_numpy(), expected, rtol=1e-6)  # float32 predictions
    assert list(r.index) == model.genes
    assert r["SIG"] > 0.5
    lognorm = new.copy()
    lognorm.X = np.log1p(lognorm.X)
    with pytest.raises(KbfmInputError, match="counts"):
        model.score(lognorm)
    assert model.score(new[:, ["G0"]].copy()).empty  # none of the predicted genes


def test_save_load_round_trip_is_exact(tmp_path):
    adata = _slides()
    train = adata[adata.obs["section"] != "c"].copy()
    new = adata[adata.obs["section"] == "c"].copy()
    kw = {"use_rep": ["X_image", "X_ct"], "rings": 1.0, "n_pcs": 8, "n_genes": 4}
    model = fit_expression_predictor(train, groupby="section", **kw)
    folder = model.save(tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == [
        "predictor.json",
        "predictor.safetensors",
    ]
    meta = json.loads((folder / "predictor.json").read_text())
    assert meta["inputs"] == ["X_image", "X_ct"] and meta["rings"] == 1.0
    assert meta["genes"] == model.genes and meta["normalize"] == "log1p_cp10k"
    loaded = ExpressionPredictor.load(folder)
    model.predict(new, key_added="memory")
    loaded.predict(new, key_added="loaded")
    np.testing.assert_array_equal(new.obsm["memory"].to_numpy(), new.obsm["loaded"].to_numpy())
    assert list(new.obsm["loaded"].columns) == model.genes
    for name in ("pca_mean", "pca_components", "ridge_coef", "ridge_intercept"):
        np.testing.assert_array_equal(getattr(model, name), getattr(loaded, name))
    np.testing.assert_array_equal(model.scaling.std, loaded.scaling.std)
    np.testing.assert_array_equal(model.scaling.low, loaded.scaling.low)
    np.testing.assert_array_equal(model.scaling.high, loaded.scaling.high)
    assert loaded.alpha == model.alpha and loaded.input_dims == model.input_dims
    single = fit_expression_predictor(train, n_pcs=8, n_genes=2)  # one input: no scaling
    back = ExpressionPredictor.load(single.save(tmp_path / "single"))
    assert single.scaling is None and back.scaling is None
    np.testing.assert_array_equal(
        single.predict_array(new.obsm["X_image"]), back.predict_array(new.obsm["X_image"])
    )


def test_damaged_or_foreign_folders_are_refused(tmp_path):
    adata = _slides()
    model = fit_expression_predictor(adata, n_pcs=8, n_genes=2)
    folder = model.save(tmp_path / "model")
    with pytest.raises(KbfmInputError, match="not a saved expression predictor"):
        ExpressionPredictor.load(tmp_path)
    arrays = folder / "predictor.safetensors"
    blob = bytearray(arrays.read_bytes())
    blob[-1] ^= 0xFF
    arrays.write_bytes(bytes(blob))
    with pytest.raises(KbfmInputError, match="does not match"):
        ExpressionPredictor.load(folder)
    model.save(folder)
    meta = json.loads((folder / "predictor.json").read_text())
    (folder / "predictor.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(KbfmInputError, match="format_version"):
        ExpressionPredictor.load(folder)
    (folder / "predictor.json").write_text(json.dumps({**meta, "n_pcs": 3}))
    with pytest.raises(KbfmInputError, match="shapes"):
        ExpressionPredictor.load(folder)
    (folder / "predictor.json").write_text("not json")
    with pytest.raises(KbfmInputError, match="JSON"):
        ExpressionPredictor.load(folder)
    with pytest.raises(KbfmInputError, match="widths"):
        model.predict_array(np.ones((3, 5)))


def test_wrong_embedding_width_names_the_inputs():
    adata = _slides()
    model = fit_expression_predictor(adata, use_rep=["X_image", "X_ct"], n_pcs=8, n_genes=2)
    other = adata.copy()
    other.obsm["X_ct"] = np.ones((other.n_obs, 7), np.float32)
    with pytest.raises(KbfmInputError, match="X_ct"):
        model.predict(other)
    del other.obsm["X_ct"]
    with pytest.raises(KbfmInputError, match="obsm\\['X_ct'\\] is missing"):
        model.predict(other)
    assert isinstance(model.score(adata), pd.Series)
