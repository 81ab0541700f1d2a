"""Concatenate several ``obsm`` embeddings with equal weight per block."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from anndata import AnnData

from .._errors import KbfmInputError
from .._provenance import record_step


def combine_embeddings(
    adata: AnnData, keys: Sequence[str], *, key_added: str = "X_combined", copy: bool = False
) -> AnnData | None:
    """Standardise each embedding, weight it by ``1/sqrt(dim)`` and concatenate.

    Each block then carries the same total variance, so a 1280-d network embedding
    does not drown an 84-d colour/texture block in a later PCA.

    Parameters
    ----------
    adata
        Object holding the embeddings in ``obsm``.
    keys
        ``obsm`` keys to combine (at least one).
    key_added
        ``obsm`` key of the result.
    copy
        Return a modified copy.

    Returns
    -------
    ``None`` (or the copy); writes ``obsm[key_added]``.

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> a = ad.AnnData(np.zeros((4, 1)))
    >>> a.obsm["A"], a.obsm["B"] = np.random.rand(4, 3), np.random.rand(4, 5)
    >>> combine_embeddings(a, ["A", "B"])
    >>> a.obsm["X_combined"].shape
    (4, 8)
    """
    adata = adata.copy() if copy else adata
    if not keys:
        msg = "Pass at least one obsm key to combine."
        raise KbfmInputError(msg)
    blocks = []
    for key in keys:
        if key not in adata.obsm:
            msg = f"adata.obsm[{key!r}] is missing; available: {list(adata.obsm)}."
            raise KbfmInputError(msg)
        block = np.asarray(adata.obsm[key], dtype=np.float64)
        std = block.std(axis=0)
        block = (block - block.mean(axis=0)) / np.where(std > 0, std, 1.0)
        blocks.append(block / np.sqrt(block.shape[1]))
    adata.obsm[key_added] = np.concatenate(blocks, axis=1).astype(np.float32)
    record_step(adata, "combine_embeddings", keys=list(keys), key_added=key_added)
    return adata if copy else None
