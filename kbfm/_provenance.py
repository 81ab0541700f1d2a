"""Provenance of every kbfm step that writes into an AnnData, kept in ``uns["kbfm"]``."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from anndata import AnnData

from ._version import __version__

UNS_KEY = "kbfm"


def _h5ad_safe(value: Any) -> Any:
    """Convert a parameter value into something h5ad can store (scalars, strings, lists)."""
    if value is None:
        return "None"
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): _h5ad_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return list(value)
    if isinstance(value, list | tuple) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    ):
        return list(value)
    try:
        return json.dumps(value, default=str)
    except TypeError:
        return str(value)


def record_step(adata: AnnData, step: str, **params: Any) -> None:
    """Record that ``step`` wrote into ``adata``, with its parameters.

    Each step is stored under ``adata.uns["kbfm"][step]`` (the latest call wins) and the
    order of calls under ``adata.uns["kbfm"]["history"]``.

    Parameters
    ----------
    adata
        The object the step wrote into.
    step
        Name of the step, e.g. ``"embed_cells"``.
    **params
        Parameters, model ids and versions; secrets must never be passed here.
    """
    log = adata.uns.get(UNS_KEY)
    if not isinstance(log, dict):
        log = {}
    entry = {k: _h5ad_safe(v) for k, v in params.items()}
    entry["kbfm_version"] = __version__
    entry["timestamp"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    log[step] = entry
    history = list(log.get("history", []))
    history.append(step)
    log["history"] = history
    adata.uns[UNS_KEY] = log
