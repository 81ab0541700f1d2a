"""Closed option sets of the ``kbfm`` commands.

Typer refuses a bad value before any file is read (``--preset huge`` -> exit 2 with the
valid choices).
"""

from __future__ import annotations

from enum import Enum


class Choice(str, Enum):
    """A CLI choice; pass ``.value`` on to kbfm functions."""

    def __str__(self) -> str:
        return self.value


Preset = Choice("Preset", {n: n for n in ("tiny", "base", "large")})
GeneSelection = Choice("GeneSelection", {n: n for n in ("auto", "spatial", "hvg")})
Species = Choice("Species", {n: n for n in ("auto", "human", "mouse")})
StainNorm = Choice("StainNorm", {"reinhard": "reinhard"})
