"""Expression matrices in the form the models expect (log-normalised float32)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ._scale import detect_scale


def log_normalise(X) -> np.ndarray | sp.csr_matrix:
    """Library size to 10,000, then log1p (``scanpy.pp.normalize_total`` + ``log1p``)."""
    import scanpy as sc
    from anndata import AnnData

    tmp = AnnData(X.astype(np.float32))
    sc.pp.normalize_total(tmp, target_sum=1e4)
    sc.pp.log1p(tmp)
    return tmp.X


def log_normalised(X) -> tuple[np.ndarray, bool]:
    """Return dense log-normalised values and whether the input held raw counts.

    The kind of values comes from :func:`kbfm._scale.detect_scale`: counts are
    library-size normalised to 1e4 and log1p-transformed, normalised values that were
    never logged get ``log1p``, log (and scaled) values pass through.
    """
    kind = detect_scale(X).kind
    X = sp.csr_matrix(X, dtype=np.float32) if sp.issparse(X) else np.asarray(X, np.float32)
    if kind == "counts":
        X = log_normalise(X)
    elif kind == "normalized":
        X = X.log1p() if sp.issparse(X) else np.log1p(X)
    dense = X.toarray() if sp.issparse(X) else X
    return np.asarray(dense, dtype=np.float32), kind == "counts"
