"""Tell raw counts from library-size-normalised and log-transformed values, and find counts."""

from __future__ import annotations

import re

from anndata import AnnData

from .._scale import SCALES, ScaleInfo, detect_scale

__all__ = ["SCALES", "ScaleInfo", "detect_scale", "find_counts", "gene_symbols", "guess_species"]


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
