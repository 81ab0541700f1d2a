"""kbfm: knowledge-based foundation models for spatial transcriptomics.

Submodules are imported on first use so that ``import kbfm`` stays fast:
``kbfm.pp`` (QC, normalisation), ``kbfm.tl`` (tools), ``kbfm.im`` (image work),
``kbfm.metrics`` (scores), ``kbfm.pl`` (plots), ``kbfm.io`` (reading/writing),
``kbfm.knowledge`` (Cell Ontology, gene descriptions, markers, symbols),
``kbfm.encoders`` (text-encoder registry), ``kbfm.datasets`` (offline demo data).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._provenance import provenance
from ._settings import settings
from ._version import __version__

_SUBMODULES = (
    "agent",
    "datasets",
    "encoders",
    "im",
    "io",
    "knowledge",
    "metrics",
    "models",
    "pl",
    "pp",
    "tl",
)

if TYPE_CHECKING:
    from . import agent, datasets, encoders, im, io, knowledge, metrics, models, pl, pp, tl

__all__ = [
    "__version__",
    "agent",
    "datasets",
    "encoders",
    "im",
    "io",
    "knowledge",
    "metrics",
    "models",
    "pl",
    "pp",
    "provenance",
    "settings",
    "tl",
]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    msg = f"module 'kbfm' has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted(__all__)
