"""embed_image + predict_expression on a generated slide whose regions drive expression."""

from __future__ import annotations

import numpy as np
import pytest
from _histology import spots_adata, texture_image, write_pyramid
from PIL import Image

from kbfm._cache import EmbeddingCache
from kbfm._errors import KbfmInputError
from kbfm.im.embed_image import embed_image
from kbfm.im.predict_expression import fit_expression_predictor, predict_expression


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory):
    return write_pyramid(tmp_path_factory.mktemp("slide") / "tex.tif", texture_image())


def test_image_to_expression_recovers_region_signal(slide_path, tmp_path):
    adata = spots_adata(step=80)  # ~230 spots: more training spots than features
    cache = EmbeddingCache(tmp_path / "cache")
    embed_image(adata, slide=slide_path, model="color-texture", cache=cache)
    assert adata.obsm["X_image"].shape == (adata.n_obs, 84)
    predict_expression(adata, groupby="section", n_genes=5)
    table = adata.uns["kbfm_predict_expression"]["pearson"]
    assert table.loc["MARKER_N"].min() > 0.8  # held-out half of the slide
    assert table.loc["MARKER_S"].min() > 0.8
    step = adata.uns["kbfm"]["embed_image"]
    assert step["field_um"] == 112.0 and step["mpp_source"] == "metadata"
    xy = adata.obsm["spatial"]
    near_border = (xy < 112).any(1) | (xy[:, 0] > 1536 - 112) | (xy[:, 1] > 1024 - 112)
    np.testing.assert_array_equal(adata.obs["kbfm_image_pad_fraction"] > 0, near_border)
    embed_image(adata, slide=slide_path, model="color-texture", cache=cache)
    assert cache.stats.hits == adata.n_obs  # second call is served from the cache


@pytest.mark.slow
def test_default_encoder_with_context_and_tta(slide_path):
    adata = spots_adata(step=400)
    embed_image(adata, slide=slide_path, context=(1.0, 2.0), tta=True, batch_size=8)
    emb = adata.obsm["X_image"]
    assert emb.shape == (adata.n_obs, 2 * 1280)
    assert adata.uns["kbfm"]["embed_image"]["model_id"] == "kbfm-registry:efficientnet_lite0"
    nuclei = adata.obs["region"].to_numpy() == "nuclei"
    fat = adata.obs["region"].to_numpy() == "fat"
    # spots of one region are closer to each other than to another region
    within = np.linalg.norm(emb[nuclei][:, None] - emb[nuclei][None], axis=-1).mean()
    across = np.linalg.norm(emb[nuclei][:, None] - emb[fat][None], axis=-1).mean()
    assert within < across


def test_stain_normalisation_runs_and_keys_the_cache(slide_path):
    adata = spots_adata(step=256)
    embed_image(adata, slide=slide_path, model="color-texture", stain_norm="reinhard")
    plain = spots_adata(step=256)
    embed_image(plain, slide=slide_path, model="color-texture")
    assert not np.allclose(adata.obsm["X_image"], plain.obsm["X_image"])


def test_prediction_onto_a_new_slide_without_expression(slide_path):
    train = spots_adata(seed=0)
    embed_image(train, slide=slide_path, model="color-texture")
    model = fit_expression_predictor(train, genes=["MARKER_N", "MARKER_S"])
    new = spots_adata(step=160, seed=1)[:, :1].copy()  # expression unused
    embed_image(new, slide=slide_path, model="color-texture")
    model.predict(new)
    pred = new.obsm["kbfm_predicted_expression"]
    nuclei = new.obs["region"].to_numpy() == "nuclei"
    assert pred["MARKER_N"][nuclei].mean() > pred["MARKER_N"][~nuclei].mean() + 1.0


def test_spots_off_image_and_unknown_mpp(slide_path, tmp_path):
    adata = spots_adata(step=256)
    adata.obsm["spatial"][0] = [99_999.0, 5.0]
    with pytest.raises(KbfmInputError, match="outside"):
        embed_image(adata, slide=slide_path, model="color-texture")
    png = tmp_path / "he.png"
    Image.fromarray(texture_image(400, 300)).save(png)
    small = spots_adata(step=256)
    small.obsm["spatial"] = np.array([[100.0, 100.0]] * small.n_obs)
    with pytest.raises(KbfmInputError, match="mpp="):
        embed_image(small, slide=png, model="color-texture")
    with pytest.raises(KbfmInputError, match="slide="):
        embed_image(small, model="color-texture")


def test_spots_landing_off_tissue_warn(slide_path, tmp_path):
    import warnings

    adata = spots_adata(step=256)
    adata.obsm["spatial"][:, 0] = 1400.0  # everything in the right third
    adata.obsm["spatial"][:, 1] = np.linspace(80, 940, adata.n_obs)
    # Fat with thin septa is tissue (pale, fatty sections must not raise false alarms) ...
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        embed_image(adata, slide=slide_path, model="color-texture", patch=None, copy=True)
    # ... bare glass is not.
    image = texture_image()
    image[:, 2 * image.shape[1] // 3 :] = 252
    glass = write_pyramid(tmp_path / "glass.tif", image)
    with pytest.warns(UserWarning, match="off tissue"):
        embed_image(adata, slide=glass, model="color-texture", patch=None)
