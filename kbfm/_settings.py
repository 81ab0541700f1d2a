"""One settings object for kbfm: cache directory, device, offline flag, verbosity."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _default_cache_dir() -> Path:
    env = os.environ.get("KBFM_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "kbfm"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _env_number(name: str, default: float, minimum: float = 1e-3) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= minimum:  # also catches NaN
        msg = f"${name} must be a number >= {minimum:g}, got {raw!r}."
        raise ValueError(msg)
    return value


@dataclass
class KbfmSettings:
    """Global kbfm settings.

    Attributes
    ----------
    cache_dir
        Where embeddings and downloaded knowledge are cached
        (``$KBFM_CACHE_DIR``, else ``$XDG_CACHE_HOME/kbfm``, else ``~/.cache/kbfm``).
    device
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"``.
    offline
        When true, nothing is fetched from the network (``$KBFM_OFFLINE`` or
        ``$HF_HUB_OFFLINE``).
    progress
        Show progress bars on long work (``$KBFM_PROGRESS=0`` or ``kbfm --quiet`` turns
        them off).
    batch_size
        Default encoder batch size.
    http_timeout, http_retries
        Seconds per attempt and extra attempts for OpenAI-compatible endpoints
        (``$KBFM_HTTP_TIMEOUT``, default 60; ``$KBFM_HTTP_RETRIES``, default 4; the CLI's
        ``--timeout``). The worst case wait is about ``timeout x (retries + 1)`` plus
        back-off.
    """

    cache_dir: Path = field(default_factory=_default_cache_dir)
    device: str = "auto"
    offline: bool = field(
        default_factory=lambda: _env_flag("KBFM_OFFLINE") or _env_flag("HF_HUB_OFFLINE")
    )
    progress: bool = field(
        default_factory=lambda: (
            os.environ.get("KBFM_PROGRESS", "1").strip().lower() not in {"0", "false", "no", "off"}
        )
    )
    batch_size: int = 64
    http_timeout: float = field(default_factory=lambda: _env_number("KBFM_HTTP_TIMEOUT", 60.0))
    http_retries: int = field(
        default_factory=lambda: int(_env_number("KBFM_HTTP_RETRIES", 4, minimum=0))
    )

    def resolve_device(self) -> str:
        """Return the concrete torch device string for :attr:`device`."""
        if self.device != "auto":
            return self.device
        try:
            import torch
        except ImportError:
            return "cpu"
        return "cuda" if torch.cuda.is_available() else "cpu"


settings = KbfmSettings()
