"""Concatenate several ``obsm`` embeddings with equal weight per block.

:class:`FeatureScaling` is the fitted form: per-feature centres and spreads measured on
one set of spots (the training spots) and reused unchanged on any other, so a new slide
is scaled exactly as the spots a model was fitted on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from anndata import AnnData

from .._errors import KbfmInputError
from .._provenance import record_step


@dataclass(frozen=True, eq=False)
class FeatureScaling:
    """Standardise each block with fitted statistics, weight it by ``1/sqrt(dim)``.

    Features of new spots are first clipped to the range seen on the fitting spots
    (``low``/``high``), so a feature that is nearly constant where the scaling was fitted
    (tiny ``std``) cannot reach huge z-scores on another slide and swamp a later PCA. On
    the fitting spots themselves the clip changes nothing.

    Attributes
    ----------
    keys
        Names of the blocks (``obsm`` keys), in concatenation order.
    dims
        Width of each block.
    mean, std
        Per-feature mean and standard deviation of the spots it was fitted on (float64;
        a constant feature gets ``std = 1``), all blocks concatenated.
    low, high
        Per-feature minimum and maximum on those spots; ``None`` (no clipping) only for
        predictors saved before the bounds existed.
    """

    keys: tuple[str, ...]
    dims: tuple[int, ...]
    mean: np.ndarray
    std: np.ndarray
    low: np.ndarray | None = None
    high: np.ndarray | None = None

    @classmethod
    def fit(cls, blocks: Sequence[np.ndarray], keys: Sequence[str]) -> FeatureScaling:
        """Measure the per-feature statistics of ``blocks`` (one array per key, spots x dim).

        Parameters
        ----------
        blocks
            The embeddings of the fitting spots, one 2-d array per key.
        keys
            Their names.

        Returns
        -------
        The fitted scaling.
        """
        if not blocks or len(blocks) != len(keys):
            msg = f"Pass one block per key (got {len(blocks)} blocks for {len(keys)} keys)."
            raise KbfmInputError(msg)
        means, stds, lows, highs = [], [], [], []
        for key, raw in zip(keys, blocks, strict=True):
            block = _as_block(raw, key)
            std = block.std(axis=0)
            means.append(block.mean(axis=0))
            stds.append(np.where(std > 0, std, 1.0))
            lows.append(block.min(axis=0))
            highs.append(block.max(axis=0))
        return cls(
            tuple(keys),
            tuple(len(m) for m in means),
            np.concatenate(means),
            np.concatenate(stds),
            np.concatenate(lows),
            np.concatenate(highs),
        )

    def transform(self, blocks: Sequence[np.ndarray]) -> np.ndarray:
        """Scale ``blocks`` with the fitted statistics and concatenate them (float64).

        Parameters
        ----------
        blocks
            One 2-d array per key, with the widths the scaling was fitted on.

        Returns
        -------
        ``spots x sum(dims)`` array.
        """
        if len(blocks) != len(self.keys):
            msg = f"Expected {len(self.keys)} blocks ({list(self.keys)}), got {len(blocks)}."
            raise KbfmInputError(msg)
        out = []
        start = 0
        for key, dim, raw in zip(self.keys, self.dims, blocks, strict=True):
            block = _as_block(raw, key)
            if block.shape[1] != dim:
                msg = (
                    f"Embedding {key!r} has {block.shape[1]} features; the scaling was fitted "
                    f"on {dim} (same encoder and options needed)."
                )
                raise KbfmInputError(msg)
            stop = start + dim
            if self.low is not None and self.high is not None:
                block = np.clip(block, self.low[start:stop], self.high[start:stop])
            scaled = (block - self.mean[start:stop]) / self.std[start:stop]
            out.append(scaled / np.sqrt(dim))
            start = stop
        return np.concatenate(out, axis=1)


def _as_block(block: np.ndarray, key: str) -> np.ndarray:
    block = np.asarray(block, dtype=np.float64)
    if block.ndim != 2 or block.shape[1] == 0:
        msg = f"Embedding {key!r} must be a 2-d spots x features array, got shape {block.shape}."
        raise KbfmInputError(msg)
    if not np.isfinite(block).all():
        msg = f"Embedding {key!r} holds NaN or infinite values."
        raise KbfmInputError(msg)
    return block


def _blocks(adata: AnnData, keys: Sequence[str]) -> list[np.ndarray]:
    if not keys:
        msg = "Pass at least one obsm key to combine."
        raise KbfmInputError(msg)
    missing = [k for k in keys if k not in adata.obsm]
    if missing:
        msg = f"adata.obsm[{missing[0]!r}] is missing; available: {list(adata.obsm)}."
        raise KbfmInputError(msg)
    return [np.asarray(adata.obsm[k]) for k in keys]


def fit_feature_scaling(adata: AnnData, keys: Sequence[str]) -> FeatureScaling:
    """Fit the scaling :func:`combine_embeddings` applies, on the spots of ``adata``.

    Parameters
    ----------
    adata
        The spots whose statistics define the scaling (e.g. the training sections).
    keys
        ``obsm`` keys to combine.

    Returns
    -------
    A :class:`FeatureScaling`; pass it as ``combine_embeddings(new, keys, scaling=...)``.

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> train, new = ad.AnnData(np.zeros((6, 1))), ad.AnnData(np.zeros((2, 1)))
    >>> for a in (train, new):
    ...     a.obsm["A"], a.obsm["B"] = np.random.rand(a.n_obs, 3), np.random.rand(a.n_obs, 5)
    >>> scaling = fit_feature_scaling(train, ["A", "B"])
    >>> combine_embeddings(new, ["A", "B"], scaling=scaling)  # scaled like train
    >>> new.obsm["X_combined"].shape
    (2, 8)
    """
    return FeatureScaling.fit(_blocks(adata, keys), keys)


def combine_embeddings(
    adata: AnnData,
    keys: Sequence[str],
    *,
    key_added: str = "X_combined",
    scaling: FeatureScaling | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Standardise each embedding, weight it by ``1/sqrt(dim)`` and concatenate.

    Each block then carries the same total variance, so a 1280-d network embedding
    does not drown an 84-d colour/texture block in a later PCA.

    Without ``scaling`` the statistics are those of ``adata`` itself, so the result
    depends on which spots it holds: to apply a model to a new slide as it was fitted,
    fit the scaling on the training spots (:func:`fit_feature_scaling`) and pass it here,
    or let :func:`~kbfm.im.predict_expression.fit_expression_predictor` combine the
    blocks itself (its predictor keeps the scaling).

    Parameters
    ----------
    adata
        Object holding the embeddings in ``obsm``.
    keys
        ``obsm`` keys to combine (at least one).
    key_added
        ``obsm`` key of the result.
    scaling
        Fitted statistics to reuse (from :func:`fit_feature_scaling`); default: fit them
        on ``adata``.
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
    blocks = _blocks(adata, keys)
    if scaling is not None and tuple(keys) != scaling.keys:
        msg = f"The scaling was fitted on {list(scaling.keys)}, not {list(keys)}."
        raise KbfmInputError(msg)
    fitted = scaling if scaling is not None else FeatureScaling.fit(blocks, keys)
    adata.obsm[key_added] = fitted.transform(blocks).astype(np.float32)
    record_step(
        adata,
        "combine_embeddings",
        keys=list(keys),
        key_added=key_added,
        scaling="given" if scaling is not None else "fitted on this object",
    )
    return adata if copy else None
