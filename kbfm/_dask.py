"""Dask arrays in kbfm: detection, full-gene-width row chunks, row-wise maps, gene moments.

kbfm never starts or configures a scheduler. ``compute()`` runs on dask's default one:
the threaded scheduler, or the ``dask.distributed`` client the user created (a
``LocalCluster``, a dask-jobqueue ``SLURMCluster``, Coiled, ...), which dask picks up by
itself. Every function here works on row chunks that span all genes, so each task holds
one chunk of cells and the result never needs more than the chunk plus its output.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from ._errors import KbfmInputError

if TYPE_CHECKING:
    import dask.array as da
    from anndata import AnnData

logger = logging.getLogger(__name__)


def is_dask(x: object) -> bool:
    """Whether ``x`` is a dask array (without importing dask when it is not loaded).

    Examples
    --------
    >>> import numpy as np
    >>> is_dask(np.ones(3))
    False
    """
    if not type(x).__module__.startswith("dask"):
        return False
    import dask.array as da

    return isinstance(x, da.Array)


def dask_matrix(adata: AnnData, *, layer: str | None = None, use_raw: bool = False):
    """Return the expression matrix ``layer`` / ``use_raw`` select when it is a dask array.

    Parameters
    ----------
    adata
        The data.
    layer, use_raw
        Where the expression is read, as in :func:`kbfm._validate.expression_matrix`.

    Returns
    -------
    ``(matrix, gene_names, where)`` for a dask matrix, else ``None`` (also for invalid
    ``layer`` / ``use_raw`` choices, which ``expression_matrix`` then reports).
    """
    if use_raw and layer is not None:
        return None
    if use_raw:
        if adata.raw is None:
            return None
        X, names, where = adata.raw.X, list(adata.raw.var_names), "adata.raw.X"
    elif layer is not None:
        if layer not in adata.layers:
            return None
        X, names, where = adata.layers[layer], list(adata.var_names), f"adata.layers[{layer!r}]"
    else:
        X, names, where = adata.X, list(adata.var_names), "adata.X"
    return (X, names, where) if is_dask(X) else None


def full_width(X: da.Array, where: str = "the dask array", columns: str = "genes") -> da.Array:
    """Return ``X`` with one chunk across its columns (genes), rechunking with a warning.

    Row-wise kernels need every gene of a cell in one chunk. Chunks split along genes
    (e.g. a zarr store written with square chunks) are merged, keeping the row chunks,
    so each task then holds ``n_column_blocks`` times more data than before.

    Parameters
    ----------
    X
        A 2-d dask array, cells x genes.
    where
        Name of the array in messages, e.g. ``"adata.X"``.
    columns
        What the columns are, in messages (``"genes"``, ``"dimensions"``).

    Returns
    -------
    The array, rechunked when needed.

    Examples
    --------
    >>> import dask.array as da
    >>> full_width(da.ones((10, 4), chunks=(5, 2)), "X").chunks
    ((5, 5), (4,))
    """
    if X.ndim != 2:
        msg = f"{where} must be 2-d (cells x {columns}), got a {X.ndim}-d dask array."
        raise KbfmInputError(msg)
    if any(np.isnan(c) for dim in X.chunks for c in dim):
        msg = (
            f"{where} has unknown chunk sizes (NaN); call .compute_chunk_sizes() on it "
            "before passing it to kbfm."
        )
        raise KbfmInputError(msg)
    if X.numblocks[1] == 1:
        return X
    old, n_col_blocks = X.chunksize, X.numblocks[1]
    X = X.rechunk({1: -1})
    logger.warning(
        "%s is chunked along %s (%d column blocks, chunks %s); rechunked to one chunk "
        "across its columns (chunks %s, about %d times more data per task). Store it with "
        "chunks=(rows, %d) to avoid this.",
        where,
        columns,
        n_col_blocks,
        old,
        X.chunksize,
        n_col_blocks,
        X.shape[1],
    )
    return X


def as_block(block: Any) -> np.ndarray | sp.csr_matrix:
    """One chunk as CSR (scipy or pydata-sparse chunks) or a dense NumPy array."""
    if sp.issparse(block):
        return sp.csr_matrix(block)
    if hasattr(block, "tocsr"):  # pydata sparse.COO / GCXS
        return sp.csr_matrix(block.tocsr())
    return np.asarray(block)


def check_block(block: np.ndarray | sp.csr_matrix, where: str) -> None:
    """Raise when a chunk holds NaN/inf or negative values (the in-memory checks, per chunk)."""
    values = block.data if sp.issparse(block) else block
    if not values.size:
        return
    bad = ~np.isfinite(values)
    if bad.any():
        msg = (
            f"{where} holds NaN or infinite values ({int(bad.sum())} in one chunk); "
            "impute or drop them first."
        )
        raise KbfmInputError(msg)
    low = float(values.min())
    if low < 0:
        hint = " It looks scaled (sc.pp.scale);" if low < -0.5 else ""
        msg = (
            f"{where} holds negative values (min {low:.3g} in one chunk).{hint} kbfm needs "
            "non-negative counts or log-normalised values: pass layer= or use_raw=True."
        )
        raise KbfmInputError(msg)


def shared(value: Any):
    """Wrap a large constant (e.g. the gene matrix) so the task graph holds it once."""
    import dask

    return dask.delayed(value, pure=True)


def map_rows(
    X: da.Array,
    func: Callable[..., np.ndarray],
    *args: Any,
    width: int | None,
    dtype: np.dtype | type = np.float32,
    **kwargs: Any,
) -> da.Array:
    """Apply ``func(block, *args, **kwargs)`` to every row chunk of a full-width array.

    Parameters
    ----------
    X
        Cells x genes, one chunk across the columns (see :func:`full_width`).
    func
        Takes a chunk (CSR or dense, see :func:`as_block`) and returns a dense array of
        ``(n_rows_in_chunk, width)``, or ``(n_rows_in_chunk,)`` when ``width`` is None.
    *args, **kwargs
        Passed to ``func``; wrap large arrays with :func:`shared`.
    width
        Columns of the output, or ``None`` for one value per row.
    dtype
        Output dtype.

    Returns
    -------
    A lazy dask array with ``X``'s row chunks; call ``.compute()``.

    Examples
    --------
    >>> import dask.array as da, numpy as np
    >>> X = da.ones((6, 3), chunks=(2, 3))
    >>> map_rows(X, lambda b: np.asarray(b).sum(1), width=None).compute().tolist()
    [3.0, 3.0, 3.0, 3.0, 3.0, 3.0]
    """
    if X.numblocks[1] != 1:
        msg = "map_rows needs one chunk across the columns; call full_width(X) first."
        raise KbfmInputError(msg)

    def run(block, *a, **kw):
        return func(as_block(block), *a, **kw)

    run.__name__ = getattr(func, "__name__", "kbfm_rows").lstrip("_")  # names the dask keys

    if width is None:
        return X.map_blocks(
            run,
            *args,
            drop_axis=1,
            chunks=(X.chunks[0],),
            dtype=dtype,
            meta=np.empty((0,), dtype=dtype),
            **kwargs,
        )
    return X.map_blocks(
        run,
        *args,
        chunks=(X.chunks[0], (int(width),)),
        dtype=dtype,
        meta=np.empty((0, 0), dtype=dtype),
        **kwargs,
    )


def _block_moments(block: Any, where: str) -> np.ndarray:
    block = as_block(block)
    check_block(block, where)
    if sp.issparse(block):
        total = np.asarray(block.sum(axis=0, dtype=np.float64)).ravel()
        squares = np.asarray(block.multiply(block).sum(axis=0, dtype=np.float64)).ravel()
    else:
        values = block.astype(np.float64, copy=False)
        total, squares = values.sum(axis=0), np.square(values).sum(axis=0)
    return np.stack([total, squares])[None]


def gene_moments(X: da.Array, where: str = "the dask array") -> tuple[np.ndarray, np.ndarray]:
    """Per-gene mean and (population) standard deviation, one pass over the row chunks.

    Each chunk is also checked for NaN/inf and negative values, so bad data is refused
    before any embedding work starts.

    Parameters
    ----------
    X
        Cells x genes, one chunk across the columns.
    where
        Name of the array in error messages.

    Returns
    -------
    ``(mean, std)``, float64 arrays of length ``n_genes``.

    Examples
    --------
    >>> import dask.array as da, numpy as np
    >>> X = da.from_array(np.array([[1.0, 0.0], [3.0, 0.0]]), chunks=(1, 2))
    >>> mean, std = gene_moments(X)
    >>> mean.tolist(), std.tolist()
    ([2.0, 0.0], [1.0, 0.0])
    """
    if X.numblocks[1] != 1:
        msg = "gene_moments needs one chunk across the columns; call full_width(X) first."
        raise KbfmInputError(msg)
    n_blocks, n_genes = X.numblocks[0], X.shape[1]
    parts = X.map_blocks(
        _block_moments,
        where,
        new_axis=1,
        chunks=((1,) * n_blocks, (2,), (n_genes,)),
        dtype=np.float64,
        meta=np.empty((0, 0, 0), dtype=np.float64),
    )
    sums = parts.sum(axis=0).compute()
    n = max(X.shape[0], 1)
    mean = sums[0] / n
    var = np.maximum(sums[1] / n - mean**2, 0.0)
    return mean, np.sqrt(var)
