"""Provenance of every kbfm step that writes into an AnnData, kept in ``uns["kbfm"]``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from anndata import AnnData

from ._errors import KbfmInputError
from ._keys import UNS_KEY
from ._version import __version__


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

    Every call is kept under ``adata.uns["kbfm"]["calls"]`` as ``"<nnn>_<step>"`` (so a
    second ``annotate(key_added="b")`` does not erase the record of the first); the
    latest call of each step is also at ``adata.uns["kbfm"][step]``, and the order of
    steps in ``adata.uns["kbfm"]["history"]``. Read them back with :func:`provenance`.

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
    calls = dict(log.get("calls", {})) if "calls" in log else _calls_before_this_version(log)
    log[step] = entry
    calls[f"{_next_call_number(calls):03d}_{step}"] = {"step": step, **entry}
    log["calls"] = calls
    history = list(log.get("history", []))
    history.append(step)
    log["history"] = history
    adata.uns[UNS_KEY] = log


def _calls_before_this_version(log: dict) -> dict:
    """Seed the per-call record from an object written before it existed."""
    old = [(n, r) for n, r in log.items() if n != "history" and isinstance(r, dict)]
    return {f"{i:03d}_{n}": {"step": n, **dict(r)} for i, (n, r) in enumerate(old, 1)}


def _next_call_number(calls: dict) -> int:
    numbers = [int(k.split("_", 1)[0]) for k in calls if k.split("_", 1)[0].isdigit()]
    return max(numbers, default=0) + 1


def provenance(
    adata: AnnData, step: str | None = None, *, key_added: str | None = None
) -> list[dict[str, Any]]:
    """Return the recorded kbfm calls on ``adata``, oldest first.

    Parameters
    ----------
    adata
        An object kbfm steps wrote into.
    step
        Only calls of this step (e.g. ``"annotate"``); all steps when ``None``.
    key_added
        Only calls that wrote this key.

    Returns
    -------
    One dict per call with ``step``, the parameters, ``kbfm_version`` and ``timestamp``.
    Objects written before per-call records existed give the latest record per step.

    Examples
    --------
    >>> import kbfm
    >>> kbfm.provenance(adata, "annotate", key_added="cell_type_b")  # doctest: +SKIP
    """
    uns = getattr(adata, "uns", None)
    if not isinstance(uns, Mapping):
        msg = (
            "kbfm.provenance expects an AnnData (or an object with a dict-like .uns), "
            f"got {type(adata).__name__}."
        )
        raise KbfmInputError(msg)
    for name, value in (("step", step), ("key_added", key_added)):
        if value is not None and not isinstance(value, str):
            msg = f"kbfm.provenance: {name} must be a string or None, got {type(value).__name__}."
            raise KbfmInputError(msg)
    log = uns.get(UNS_KEY)
    if not isinstance(log, dict):
        return []
    calls = log.get("calls")
    if isinstance(calls, dict) and calls:
        records = [dict(calls[k]) for k in sorted(calls, key=_call_order)]
    else:
        records = [
            {"step": name, **dict(rec)}
            for name, rec in log.items()
            if name not in ("history", "calls") and isinstance(rec, dict)
        ]
    if step is not None:
        records = [r for r in records if r.get("step") == step]
    if key_added is not None:
        records = [r for r in records if r.get("key_added") == key_added]
    return records


def _call_order(key: str) -> tuple[int, str]:
    head = key.split("_", 1)[0]
    return (int(head) if head.isdigit() else 0, key)
