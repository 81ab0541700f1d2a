"""What a matrix holds: raw counts, library-size-normalised, log or scaled values.

This is kbfm's one rule for telling counts from log data; every step that needs to know
(QC, normalisation, annotation, FusionModel inputs) asks :func:`detect_scale`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

#: The kinds of values :func:`detect_scale` can report.
SCALES = ("counts", "normalized", "log", "scaled")

# log1p of library-size-normalised data (target 1e4-1e6) stays below ~14; normalised
# counts without the log usually reach hundreds or more.
_LOG_MAX = 20.0


@dataclass(frozen=True)
class ScaleInfo:
    """What a matrix holds.

    Attributes
    ----------
    kind
        One of ``"counts"``, ``"normalized"`` (library-size scaled, not logged),
        ``"log"`` (log1p of counts or of normalised values) or ``"scaled"``
        (negative values: z-scores, residuals); ``"invalid"`` when the sampled values
        hold NaN or infinity (callers refuse such data before looking at the kind).
    reason
        One sentence a person can check, e.g. ``"non-integer values, max 8.9"``.
    """

    kind: str
    reason: str


def sample_index(n: int, max_rows: int = 2000, seed: int = 0) -> np.ndarray | None:
    """Sorted rows :func:`detect_scale` looks at (``None``: all ``n`` rows)."""
    if n <= max_rows:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))


def _sample_rows(X, max_rows: int = 2000, seed: int = 0):
    idx = sample_index(X.shape[0], max_rows, seed)
    return X if idx is None else X[idx]


def detect_scale(X) -> ScaleInfo:
    """Detect whether ``X`` holds counts, normalised, log or scaled values.

    The test looks at a sample of rows: negative values mean scaled data; all-integer
    values mean counts; otherwise a maximum below 20 means a log transform, and larger
    values mean library-size normalised data.

    Parameters
    ----------
    X
        Dense or sparse matrix (observations x genes).

    Returns
    -------
    A :class:`ScaleInfo`.

    Examples
    --------
    >>> import numpy as np
    >>> detect_scale(np.array([[0, 3], [5, 1]])).kind
    'counts'
    >>> detect_scale(np.log1p(np.array([[0, 3.5], [5, 1]]))).kind
    'log'
    """
    sub = _sample_rows(X)
    values = sub.data if sp.issparse(sub) else np.asarray(sub).ravel()
    values = values[values != 0]
    if values.size and not np.isfinite(values).all():
        return ScaleInfo("invalid", "NaN or infinite values")
    if values.size == 0:
        return ScaleInfo("counts", "all sampled values are zero")
    vmin, vmax = float(values.min()), float(values.max())
    if vmin < 0:
        return ScaleInfo("scaled", f"negative values (min {vmin:.3g})")
    frac = np.abs(values - np.round(values))
    if float(frac.max()) < 1e-6:
        return ScaleInfo("counts", f"non-negative integers, max {vmax:.0f}")
    if vmax < _LOG_MAX:
        return ScaleInfo("log", f"non-integer values with max {vmax:.3g} (< {_LOG_MAX:g})")
    sums = np.asarray(sub.sum(axis=1)).ravel()
    sums = sums[sums > 0]
    cv = float(sums.std() / sums.mean()) if sums.size else 0.0
    detail = f"; row sums all ~{sums.mean():.3g}" if cv < 1e-3 else ""
    return ScaleInfo("normalized", f"non-integer values with max {vmax:.3g}{detail}")


def looks_like_counts(X) -> bool:
    """True when :func:`detect_scale` reports raw counts (non-negative whole numbers)."""
    return detect_scale(X).kind == "counts"
