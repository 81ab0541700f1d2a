"""Expression matrices in the form the models expect (dense log-normalised float32)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def log_normalised(X) -> tuple[np.ndarray, bool]:
    """Return dense ``log1p`` of counts per 10k (or of the values as given) and whether
    the input looked like raw counts.

    Library-size-normalised values that were never logged (peaks above 30) get ``log1p``;
    values that already look logged pass through.
    """
    from .tl.annotate_markers import looks_like_counts

    counts = looks_like_counts(X)
    X = sp.csr_matrix(X, dtype=np.float32) if sp.issparse(X) else np.asarray(X, np.float32)
    peak = X.max() if X.shape[0] * X.shape[1] else 0.0
    if not counts and peak > 30:
        X = X.log1p() if sp.issparse(X) else np.log1p(X)
    if counts:
        totals = np.asarray(X.sum(1)).ravel()
        scale = 1e4 / np.maximum(totals, 1)
        X = sp.diags(scale) @ X if sp.issparse(X) else X * scale[:, None]
        X = X.log1p() if sp.issparse(X) else np.log1p(X)
    dense = X.toarray() if sp.issparse(X) else X
    return dense.astype(np.float32), counts
