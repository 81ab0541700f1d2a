"""Detect whether gene names are human or mouse."""

from __future__ import annotations

import re
from collections.abc import Iterable

from .._errors import KbfmInputError, preview

SPECIES_CHOICES = ("auto", "human", "mouse")
_HUMAN_ENSEMBL = re.compile(r"^ENSG\d+")
_MOUSE_ENSEMBL = re.compile(r"^ENSMUSG\d+")
_HUMAN_SYMBOL = re.compile(r"^[A-Z][A-Z0-9-]*[A-Z0-9]$")  # CD3E, HLA-DRA
_MOUSE_SYMBOL = re.compile(r"^[A-Z][a-z0-9]+[a-z0-9-]*$")  # Cd3e, Gfap, Rik genes


def detect_species(names: Iterable[str], *, min_share: float = 0.6) -> str:
    """Return ``"human"`` or ``"mouse"`` from the spelling of gene names.

    Ensembl ids decide by prefix (``ENSG`` / ``ENSMUSG``). Symbols decide by case:
    human symbols are upper case (``GFAP``), mouse symbols capitalised (``Gfap``).
    Names that fit neither (numbers, ``orf`` genes) are ignored.

    Parameters
    ----------
    names
        Gene names, e.g. ``adata.var_names``.
    min_share
        Share of the classified names one species must hold.

    Returns
    -------
    ``"human"`` or ``"mouse"``.

    Raises
    ------
    KbfmInputError
        When neither species reaches ``min_share`` (pass ``species=`` explicitly).

    Examples
    --------
    >>> detect_species(["Gfap", "Aqp4", "Snap25"])
    'mouse'
    >>> detect_species(["GFAP", "ENSG00000131095"])
    'human'
    """
    names = [str(n) for n in names]
    human = mouse = 0
    for name in names:
        if _MOUSE_ENSEMBL.match(name):
            mouse += 1
        elif _HUMAN_ENSEMBL.match(name):
            human += 1
        elif _MOUSE_SYMBOL.match(name):
            mouse += 1
        elif _HUMAN_SYMBOL.match(name) and len(name) > 1:
            human += 1
    total = human + mouse
    if total and human / total >= min_share:
        return "human"
    if total and mouse / total >= min_share:
        return "mouse"
    msg = (
        f"Cannot tell the species from the gene names ({human} look human, {mouse} look "
        f"mouse, of {len(names)}; e.g. {preview(names)}). Pass species='human' or "
        "species='mouse'."
    )
    raise KbfmInputError(msg)


def resolve_species(species: str, names: Iterable[str]) -> str:
    """Return ``species``, or the detected one when it is ``"auto"``.

    Raises
    ------
    KbfmInputError
        For a value other than ``"auto"``, ``"human"`` or ``"mouse"``, or when
        detection fails.
    """
    if species not in SPECIES_CHOICES:
        msg = f"species must be one of {list(SPECIES_CHOICES)}, got {species!r}."
        raise KbfmInputError(msg)
    return detect_species(names) if species == "auto" else species
