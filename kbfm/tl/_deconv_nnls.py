"""Signature non-negative least squares: the baseline deconvolution."""

from __future__ import annotations

import numpy as np


def nnls_proportions(Y: np.ndarray, S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve ``min ||S.T w - y||`` with ``w >= 0`` for every spot.

    Parameters
    ----------
    Y
        Spot counts on the selected genes, ``(n_spots, n_genes)``.
    S
        Cell-type signatures (mean counts per cell), ``(n_types, n_genes)``.

    Returns
    -------
    ``(proportions, weights)``: weights are the fitted numbers of "average cells" of each
    type; proportions are the weights divided by their sum (uniform for an empty spot).
    """
    from scipy.optimize import nnls

    A = np.asarray(S, dtype=float).T
    W = np.zeros((Y.shape[0], S.shape[0]))
    for i, y in enumerate(np.asarray(Y, dtype=float)):
        W[i], _ = nnls(A, y)
    total = W.sum(axis=1, keepdims=True)
    P = np.where(total > 0, W / np.where(total > 0, total, 1.0), 1.0 / S.shape[0])
    return P, W
