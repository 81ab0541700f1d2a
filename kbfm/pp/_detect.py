"""Tell raw counts from library-size-normalised and log-transformed values, and find counts."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

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


def _sample_rows(X, max_rows: int = 2000, seed: int = 0):
    n = X.shape[0]
    if n <= max_rows:
        return X
    idx = np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))
    return X[idx]


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


def find_counts(adata: AnnData, *, layer: str | None = None) -> tuple[object, str, ScaleInfo]:
    """Return a matrix of raw counts and where it came from, if ``adata`` holds one.

    Looks in ``layers[layer]`` when given, else ``X``, then ``layers["counts"]``,
    ``layers["raw_counts"]`` and ``raw.X`` (only when ``raw`` has the same genes).

    Returns
    -------
    ``(matrix, where, scale)``; when no counts are found, the matrix of ``X``
    (or ``layer``) with its detected scale, so callers can refuse or adapt.
    """
    if layer is not None:
        X = adata.layers[layer]
        return X, f"adata.layers[{layer!r}]", detect_scale(X)
    first = (adata.X, "adata.X", detect_scale(adata.X))
    if first[2].kind == "counts":
        return first
    for key in ("counts", "raw_counts"):
        if key in adata.layers:
            info = detect_scale(adata.layers[key])
            if info.kind == "counts":
                return adata.layers[key], f"adata.layers[{key!r}]", info
    if adata.raw is not None and list(adata.raw.var_names) == list(adata.var_names):
        info = detect_scale(adata.raw.X)
        if info.kind == "counts":
            return adata.raw.X, "adata.raw.X", info
    return first


_SYMBOL_COLUMNS = ("gene_symbols", "gene_symbol", "feature_name", "gene_name", "symbol")
_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}")


def gene_symbols(adata: AnnData, *, gene_symbols_key: str | None = None) -> list[str]:
    """Gene symbols for ``adata.var``: a named column, a usual column, or ``var_names``."""
    if gene_symbols_key is not None:
        return [str(s) for s in adata.var[gene_symbols_key]]
    names = [str(s) for s in adata.var_names]
    n_ens = sum(bool(_ENSEMBL.match(n)) for n in names[:500])
    if n_ens > 0.5 * min(len(names), 500):
        for col in _SYMBOL_COLUMNS:
            if col in adata.var.columns:
                return [str(s) for s in adata.var[col]]
    return names


def guess_species(symbols: list[str]) -> str:
    """Guess ``"human"`` (upper-case symbols, ``MT-``) or ``"mouse"`` (``Gapdh``, ``mt-``)."""
    if any(s.startswith("MT-") for s in symbols):
        return "human"
    if any(s.startswith("mt-") for s in symbols):
        return "mouse"
    alpha = [s for s in symbols[:3000] if s[:1].isalpha() and not _ENSEMBL.match(s)]
    if not alpha:
        return "human"
    upper = sum(s == s.upper() for s in alpha)
    return "human" if upper >= 0.5 * len(alpha) else "mouse"
