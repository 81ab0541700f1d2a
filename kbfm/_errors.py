"""User-facing error types and message helpers."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class KbfmInputError(ValueError):
    """Raised when user input (data, key, name, file) is not what kbfm expects."""


class KbfmUnavailableError(RuntimeError):
    """Raised when a requested model, endpoint or resource cannot be reached or loaded."""


def closest_names(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return a short "did you mean" hint for ``name`` among ``choices`` (may be empty)."""
    matches = difflib.get_close_matches(str(name), [str(c) for c in choices], n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(repr(m) for m in matches)}?" if matches else ""


def preview(items: Iterable[object], n: int = 5) -> str:
    """Format the first ``n`` items of a collection for an error message."""
    items = list(items)
    shown = ", ".join(repr(str(i)) for i in items[:n])
    more = f", ... ({len(items) - n} more)" if len(items) > n else ""
    return f"[{shown}{more}]"
