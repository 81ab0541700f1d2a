"""FusionModel inputs computed block by block: the whole matrix is never densified.

Each block of spots is normalised exactly as :func:`kbfm._expression.log_normalised`
would normalise the whole matrix (counts per 10k + ``log1p``; ``log1p`` of
library-normalised values that were never logged), then restricted to the model's genes
and standardised with the training means and scales.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

CACHE_ENTRIES = 250_000_000  # 1 GB of float32: 100k spots x 2,000 genes are kept whole
CACHE_BLOCK = 8192  # spots per block while the cache is filled


class SpotInputs:
    """Standardised model inputs of any block of spots.

    Parameters
    ----------
    X
        Spots x genes (CSR or dense), as returned by :func:`kbfm._validate.expression_matrix`.
    names
        Gene names of ``X``'s columns.
    genes
        The model's genes; those missing from ``names`` get the training mean (0 after
        standardising).
    mean, std
        Training mean and scale of each model gene (log-normalised scale).
    """

    def __init__(self, X, names, genes, mean, std) -> None:
        from .._dask import as_block, full_width, is_dask, map_rows
        from .._scale import detect_scale, sample_index

        # a dask matrix stays lazy: blocks of spots are computed when they are needed
        self.lazy = is_dask(X)
        if self.lazy:
            self.X = full_width(X, "the dask expression matrix")
        else:
            self.X = sp.csr_matrix(X) if sp.issparse(X) else np.asarray(X)
        index = {str(n): i for i, n in enumerate(names)}
        cols = np.asarray([index.get(g, -1) for g in genes])
        self.present = np.flatnonzero(cols >= 0)
        self.cols = cols[self.present]
        self.missing = [g for g, c in zip(genes, cols, strict=True) if c < 0]
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)
        self.n_genes = len(genes)
        self._inv_std = (1.0 / self.std[self.present]).astype(np.float32)
        self._cache: np.ndarray | None = None
        if self.lazy:  # the rows detect_scale samples, computed
            idx = sample_index(self.X.shape[0])
            kind = detect_scale(as_block((self.X if idx is None else self.X[idx]).compute())).kind
        else:
            kind = detect_scale(self.X).kind
        self.counts = kind == "counts"
        self.log_only = kind == "normalized"
        self.scale = None
        if self.counts:
            if self.lazy:  # row sums chunk by chunk (works for sparse chunks too)
                totals = map_rows(self.X, _row_sums, width=None, dtype=np.float64).compute()
            else:
                totals = np.asarray(self.X.sum(1)).ravel()
            self.scale = 1e4 / np.maximum(totals, 1)

    @property
    def n_obs(self) -> int:
        return self.X.shape[0]

    def rows(self, idx: np.ndarray | None = None) -> np.ndarray:
        """Standardised inputs of the spots ``idx`` (all when ``None``), float32 dense.

        When the whole standardised matrix fits in ``CACHE_ENTRIES`` values it is
        computed once and batches are sliced from it (mini-batch epochs then cost no
        normalisation); larger data are normalised block by block on every request.
        """
        if self._cache is None and self.n_obs * self.n_genes <= CACHE_ENTRIES:
            # filled block by block: the float64 whole-matrix formula is row-wise, so the
            # values are those of one big call, without its float64 temporaries (~4x)
            cache = np.empty((self.n_obs, self.n_genes), dtype=np.float32)
            for start in range(0, self.n_obs, CACHE_BLOCK):
                stop = min(start + CACHE_BLOCK, self.n_obs)
                cache[start:stop] = self._compute(slice(start, stop))
            self._cache = cache
        if self._cache is not None:
            return self._cache if idx is None else self._cache[idx]
        return self._compute(slice(None) if idx is None else idx)

    def _compute(self, idx: np.ndarray | slice) -> np.ndarray:
        if self.lazy:
            from .._dask import as_block, check_block

            block = as_block(self.X[idx].compute())
            check_block(block, "the dask expression matrix")
            block = block[:, self.cols]
        else:
            block = self.X[idx][:, self.cols]
        if sp.issparse(block):
            block = sp.csr_matrix(block, dtype=np.float32)
        else:
            block = np.asarray(block, dtype=np.float32)
        if self.log_only:
            block = block.log1p() if sp.issparse(block) else np.log1p(block)
        if self.counts:
            scale = self.scale[idx]
            block = sp.diags(scale) @ block if sp.issparse(block) else block * scale[:, None]
            block = block.log1p() if sp.issparse(block) else np.log1p(block)
        dense = block.toarray() if sp.issparse(block) else block
        if isinstance(idx, slice):
            # whole-matrix path in float64, exactly as earlier versions computed it
            values = np.broadcast_to(self.mean, (dense.shape[0], self.n_genes)).copy()
            values[:, self.present] = dense.astype(np.float32)
            return ((values - self.mean) / self.std).clip(-10, 10).astype(np.float32)
        # batches: float32 (same values to rounding, about twice as fast)
        out = np.zeros((dense.shape[0], self.n_genes), dtype=np.float32)
        mean, inv = self.mean[self.present].astype(np.float32), self._inv_std
        out[:, self.present] = np.clip((dense.astype(np.float32) - mean) * inv, -10, 10)
        return out


def _row_sums(block) -> np.ndarray:
    return np.asarray(block.sum(1), dtype=np.float64).ravel()
