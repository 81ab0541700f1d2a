"""Normalisation that picks its method from the data and records why."""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from .._errors import KbfmInputError, closest_names
from .._provenance import record_step
from .._validate import check_adata, check_finite, check_in_memory
from ._detect import detect_scale

logger = logging.getLogger(__name__)

METHODS = ("auto", "log1p", "pearson", "none")


def choose_method(X, *, max_dense: float = 2e8, spread: float = 10.0) -> tuple[str, str, str]:
    """Pick a normalisation for ``X`` and say why.

    Returns
    -------
    ``(method, reason, scale)``: ``"none"`` for log values, ``"log1p"`` (log only) for
    normalised values, and for counts ``"pearson"`` when library sizes differ by more
    than ``spread``-fold between the 5th and 95th percentiles (where a single size factor
    fits poorly; Lause et al. 2021) and the dense residual matrix has at most
    ``max_dense`` entries, else ``"log1p"`` (library size + log1p).
    """
    info = detect_scale(X)
    if info.kind == "scaled":
        msg = (
            f"X holds scaled values ({info.reason}); it cannot be normalised again. "
            "Pass layer= with raw counts."
        )
        raise KbfmInputError(msg)
    if info.kind == "log":
        return "none", f"X is already log-transformed ({info.reason})", info.kind
    if info.kind == "normalized":
        return "log1p", f"X is library-size normalised ({info.reason}); only log1p", info.kind
    totals = np.asarray(X.sum(axis=1)).ravel()
    totals = totals[totals > 0]
    q05, q95 = np.percentile(totals, [5, 95]) if totals.size else (1.0, 1.0)
    ratio = float(q95 / max(q05, 1.0))
    size = X.shape[0] * X.shape[1]
    if ratio > spread and size <= max_dense:
        reason = (
            f"raw counts ({info.reason}); library sizes vary {ratio:.1f}-fold (5th-95th "
            f"percentile, > {spread:g}), so analytic Pearson residuals"
        )
        return "pearson", reason, info.kind
    why = (
        f"library sizes vary {ratio:.1f}-fold (<= {spread:g})"
        if ratio <= spread
        else f"{size:.3g} entries would not fit densely (> {max_dense:.3g})"
    )
    return "log1p", f"raw counts ({info.reason}); {why}, so library size + log1p", info.kind


def normalize(
    adata: AnnData,
    *,
    method: str = "auto",
    target_sum: float | None = 1e4,
    layer: str | None = None,
    counts_layer: str | None = "counts",
    theta: float = 100.0,
    copy: bool = False,
) -> AnnData | None:
    """Normalise ``X``, choosing between library size + log1p, Pearson residuals and none.

    With ``method="auto"`` the choice follows :func:`choose_method`: log values are left
    alone, normalised values only get ``log1p``, and counts get library size + ``log1p``
    unless library sizes vary strongly, in which case analytic Pearson residuals
    (``scanpy.experimental.pp.normalize_pearson_residuals``) are used. The method and the
    reason are stored in ``uns["kbfm"]["normalize"]``.

    Parameters
    ----------
    adata
        Spots x genes.
    method
        ``"auto"``, ``"log1p"`` (library size + log1p), ``"pearson"`` or ``"none"``.
    target_sum
        Library size after scaling for ``"log1p"`` (``None``: the median).
    layer
        Normalise this layer instead of ``X`` (the result goes to ``X``).
    counts_layer
        Keep the raw counts in this layer before overwriting ``X`` (``None``: do not).
    theta
        Overdispersion of the Pearson residuals.
    copy
        Work on a copy and return it.

    Returns
    -------
    ``None`` (or a copy with ``copy=True``); ``X`` is replaced.

    Example
    -------
    >>> import kbfm
    >>> kbfm.pp.normalize(adata)  # doctest: +SKIP
    >>> adata.uns["kbfm"]["normalize"]["reason"]  # doctest: +SKIP
    'raw counts (...); library sizes vary 3.1-fold (<= 10), so library size + log1p'
    """
    import scanpy as sc

    check_adata(adata)
    if method not in METHODS:
        msg = f"method must be one of {list(METHODS)}, got {method!r}." + closest_names(
            method, METHODS
        )
        raise KbfmInputError(msg)
    if layer is not None and layer not in adata.layers:
        msg = f"Layer {layer!r} not found in adata.layers; available: {list(adata.layers)}."
        raise KbfmInputError(msg)
    check_in_memory(adata, "normalize")
    X = adata.layers[layer] if layer is not None else adata.X
    check_finite(X, f"adata.layers[{layer!r}]" if layer is not None else "adata.X")
    adata = adata.copy() if copy else adata
    X = adata.layers[layer] if layer is not None else adata.X

    auto_method, reason, scale = choose_method(X)
    if method == "auto":
        method = auto_method
    else:
        reason = f"requested by the caller (auto would choose {auto_method!r}: {reason})"
        if method in ("log1p", "pearson") and scale == "log":
            msg = (
                f"method={method!r} but the data is already log-transformed; use "
                "method='none' or pass layer= with raw counts."
            )
            raise KbfmInputError(msg)
        if method == "pearson" and scale != "counts":
            msg = "Pearson residuals need raw counts; pass layer= with counts."
            raise KbfmInputError(msg)

    kept = None
    if scale == "counts" and counts_layer is not None and method != "none":
        if counts_layer not in adata.layers:
            adata.layers[counts_layer] = X.copy()
            kept = counts_layer
    if layer is not None:
        adata.X = X.copy()
    if method != "none" and sp.issparse(adata.X) and not isinstance(adata.X, sp.spmatrix):
        # scanpy's normalize_total and Pearson residuals refuse scipy sparse arrays
        adata.X = sp.csr_matrix(adata.X)
    if method == "log1p":
        if scale == "counts":
            sc.pp.normalize_total(adata, target_sum=target_sum)
        sc.pp.log1p(adata)
    elif method == "pearson":
        adata.X = adata.X.astype(np.float32)
        sc.experimental.pp.normalize_pearson_residuals(adata, theta=theta)
        # A gene or spot without counts has expected count 0 and residual 0/0 (NaN);
        # the residual's limit as the expected count goes to 0 is 0.
        adata.X = np.nan_to_num(adata.X, nan=0.0)
    logger.info("normalize: %s (%s)", method, reason)
    record_step(
        adata,
        "normalize",
        method=method,
        reason=reason,
        input_scale=scale,
        target_sum=target_sum,
        theta=theta if method == "pearson" else None,
        source_layer=layer,
        counts_kept_in=kept,
    )
    return adata if copy else None
