"""Find a log-normalised expression matrix for the knowledge-based tools.

Zero-shot annotation, marker scoring and clustering need non-negative, log-normalised
values. Users arrive with counts, with log data, or with ``X`` replaced by Pearson
residuals or scaled values (e.g. after ``kbfm.pp.normalize(method="auto")``). This
module picks what to use and says which, instead of refusing data kbfm itself made.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from .._errors import KbfmInputError
from .._expression import log_normalise
from .._scale import detect_scale
from .._validate import expression_matrix

logger = logging.getLogger(__name__)

#: Layers searched, in order, when ``X`` holds negative values.
LOG_LAYERS = ("log1p", "lognorm", "log_normalized", "logcounts", "log")
COUNT_LAYERS = ("counts", "raw_counts", "count")


@dataclass
class LogExpression:
    """The matrix to use, its gene names, and where it came from (for provenance)."""

    X: np.ndarray | sp.csr_matrix
    names: list[str]
    where: str


def _has_negative(X) -> bool:
    values = X.data if sp.issparse(X) else np.asarray(X)
    return bool(values.size) and float(values.min()) < 0


def log_expression(adata: AnnData, *, layer: str | None = None, use_raw: bool = False):
    """Return log-normalised expression for annotation, and where it came from.

    With ``layer=`` or ``use_raw=True`` that matrix is used (counts are log-normalised on
    a copy). Otherwise ``X`` is used when it is non-negative; when it holds negative
    values (Pearson residuals, ``sc.pp.scale``), a log layer, a counts layer (also the
    one ``kbfm.pp.normalize`` kept) or ``adata.raw`` is used instead. ``adata`` is never
    modified.

    Returns
    -------
    A :class:`LogExpression`.

    Raises
    ------
    KbfmInputError
        When no non-negative matrix can be found.
    """
    if layer is None and not use_raw and _has_negative(adata.X):
        kept = adata.uns.get("kbfm", {}).get("normalize", {}).get("counts_kept_in")
        options = [*LOG_LAYERS, *([kept] if kept else []), *COUNT_LAYERS]
        found = next((k for k in options if k in adata.layers), None)
        if found is not None:
            layer = found
        elif adata.raw is not None and not _has_negative(adata.raw.X):
            use_raw = True
        else:
            msg = (
                "adata.X holds negative values (Pearson residuals or scaled data) and no "
                f"non-negative layer was found (looked for {list(dict.fromkeys(options))} "
                "and adata.raw). Keep counts in a layer (kbfm.pp.normalize does, as "
                "'counts') or pass layer=."
            )
            raise KbfmInputError(msg)
        logger.warning(
            "adata.X holds negative values (residuals or scaled data); using %s instead.",
            "adata.raw.X" if use_raw else f"adata.layers[{layer!r}]",
        )
    X, names = expression_matrix(adata, layer=layer, use_raw=use_raw)
    where = "adata.raw.X" if use_raw else (f"adata.layers[{layer!r}]" if layer else "adata.X")
    if detect_scale(X).kind in ("counts", "normalized"):
        logger.info("%s holds counts: log-normalised (1e4 + log1p) on a copy.", where)
        X = log_normalise(X)
        where += ", log-normalised here (library size 1e4, log1p)"
    return LogExpression(X, names, where)
