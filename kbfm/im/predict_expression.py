"""Predict spot expression from image embeddings (HEST-Benchmark protocol).

Protocol: target genes are the ``n_genes`` most variable genes (variance of the
normalised expression over the training spots); the embeddings are reduced by PCA fitted
on the training spots to ``n_pcs`` (256) dimensions, a ridge regression with
``alpha = 100 / (n_pcs * n_genes)`` is fitted, and each held-out section is scored by the
Pearson r of every gene. Folds hold out one section/slide at a time (``groupby``), so a
score measures transfer to an unseen section.

Everything fitted comes from the training spots of a fold: the genes (unless given), the
feature scaling of combined embeddings, the PCA and the ridge. The held-out section only
supplies the embeddings to predict from and the expression to score against. An
:class:`ExpressionPredictor` carries every such step, from the ``obsm`` embeddings to
predicted expression, and saves to a folder (JSON + safetensors, no pickle).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._errors import KbfmInputError
from .._keys import IMAGE_KEY, PREDICTED_KEY, RESULT_KEY
from .._provenance import record_step
from .._scale import looks_like_counts
from .._spatial_graph import ring_neighbours
from .._validate import check_adata, expression_matrix
from .._version import __version__
from ..io._spatial import spatial_coords
from ..metrics import pearson_per_gene
from .combine_embeddings import FeatureScaling

logger = logging.getLogger(__name__)

FORMAT = "kbfm-expression-predictor"
FORMAT_VERSION = 1
_META = "predictor.json"
_ARRAYS = "predictor.safetensors"
_TARGET_SUM = 1e4


def normalized_expression(
    adata: AnnData, *, layer: str | None = None, normalize: str = "auto"
) -> tuple[np.ndarray | sp.csr_matrix, list[str]]:
    """Return ``log1p`` of counts scaled to 10,000 per spot (or the matrix as given).

    ``normalize="auto"`` normalises integer counts and leaves non-integer values
    (already normalised) alone; ``"log1p_cp10k"`` always normalises; ``"none"`` never.
    Each spot is scaled by its own total, so no statistic crosses spots.
    """
    X, genes, _mode = _normalized(adata, layer=layer, normalize=normalize)
    return X, genes


def _normalized(
    adata: AnnData, *, layer: str | None, normalize: str
) -> tuple[np.ndarray | sp.csr_matrix, list[str], str]:
    """:func:`normalized_expression` and what it did (``"log1p_cp10k"`` or ``"none"``)."""
    X, genes = expression_matrix(adata, layer=layer)
    if normalize not in ("auto", "log1p_cp10k", "none"):
        msg = f"normalize must be 'auto', 'log1p_cp10k' or 'none', got {normalize!r}."
        raise KbfmInputError(msg)
    if normalize == "none" or (normalize == "auto" and not looks_like_counts(X)):
        return X, genes, "none"
    totals = np.asarray(X.sum(axis=1)).ravel()
    scale = np.divide(
        _TARGET_SUM, totals, out=np.zeros_like(totals, dtype=np.float64), where=totals > 0
    )
    if sp.issparse(X):
        Y = sp.diags(scale) @ X
        Y.data = np.log1p(Y.data)
        return Y.tocsr(), genes, "log1p_cp10k"
    return np.log1p(X * scale[:, None]), genes, "log1p_cp10k"


def top_variable_genes(X: np.ndarray | sp.csr_matrix, genes: list[str], n: int) -> list[str]:
    """Return the ``n`` genes with the largest variance (ties broken by name order)."""
    if sp.issparse(X):
        mean = np.asarray(X.mean(axis=0)).ravel()
        var = np.asarray(X.multiply(X).mean(axis=0)).ravel() - mean**2
    else:
        var = np.asarray(X).var(axis=0)
    order = np.argsort(-var, kind="stable")[:n]
    return [genes[i] for i in order]


def _dense(X) -> np.ndarray:
    return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float64)


def _as_inputs(use_rep: str | Sequence[str]) -> tuple[str, ...]:
    inputs = (use_rep,) if isinstance(use_rep, str) else tuple(use_rep)
    if not inputs or len(set(inputs)) != len(inputs):
        msg = f"use_rep must name one or more distinct obsm keys, got {use_rep!r}."
        raise KbfmInputError(msg)
    return inputs


def _context(embedding: np.ndarray, coords: np.ndarray, rings: float, groups) -> np.ndarray:
    """Each spot's embedding, then the mean over its neighbours (``spatial_context``)."""
    embedding = np.asarray(embedding, dtype=np.float32)
    surround = np.zeros_like(embedding)
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        for row, neighbours in zip(members, ring_neighbours(coords[members], rings), strict=True):
            surround[row] = embedding[members[neighbours]].mean(0)
    return np.concatenate([embedding, surround], axis=1)


def input_blocks(
    adata: AnnData,
    use_rep: str | Sequence[str],
    *,
    rings: float = 0.0,
    groupby: str | None = None,
) -> list[np.ndarray]:
    """The unscaled feature blocks a predictor reads: each ``obsm`` key, with context.

    Parameters
    ----------
    adata
        Spots with the embeddings (and ``obsm['spatial']`` when ``rings > 0``).
    use_rep
        One ``obsm`` key or several.
    rings
        When > 0, append to each embedding the mean over the spots within this many grid
        steps (as :func:`kbfm.tl.spatial_context` does), within each ``groupby`` group.
    groupby
        ``obs`` column with the section/slide (neighbours never cross groups).

    Returns
    -------
    One float64 array per key (``n_obs x dim``, or ``2 * dim`` with context).
    """
    inputs = _as_inputs(use_rep)
    missing = [k for k in inputs if k not in adata.obsm]
    if missing:
        msg = (
            f"adata.obsm[{missing[0]!r}] is missing (available: {list(adata.obsm)}); "
            "run kbfm.im.embed_image first."
        )
        raise KbfmInputError(msg)
    if rings < 0 or not np.isfinite(rings):
        msg = f"rings must be >= 0 (0 = no neighbouring spots), got {rings}."
        raise KbfmInputError(msg)
    blocks = []
    coords = groups = None
    if rings > 0:
        coords = spatial_coords(adata)
        if groupby is not None and groupby not in adata.obs:
            msg = f"obs[{groupby!r}] not found; available: {list(adata.obs.columns)}."
            raise KbfmInputError(msg)
        groups = (
            adata.obs[groupby].astype(str).to_numpy()
            if groupby is not None
            else np.zeros(adata.n_obs, dtype=str)
        )
    for key in inputs:
        block = np.asarray(adata.obsm[key])
        if block.ndim != 2:
            msg = f"adata.obsm[{key!r}] must be 2-d (spots x features), got {block.shape}."
            raise KbfmInputError(msg)
        if not np.isfinite(block).all():
            msg = f"adata.obsm[{key!r}] holds NaN or infinite values."
            raise KbfmInputError(msg)
        if rings > 0:
            block = _context(block, coords, rings, groups)
        blocks.append(np.asarray(block, dtype=np.float64))
    return blocks


@dataclass(eq=False)
class ExpressionPredictor:
    """Every fitted step from image embeddings to expression, fitted on training spots.

    Prediction reads ``obsm[k]`` for each key of ``inputs``; appends the neighbouring-spot
    mean when ``rings > 0``; standardises and weights the blocks with the statistics of
    the training spots (``scaling``, as :func:`~kbfm.im.combine_embeddings` does, when
    several embeddings are combined); projects on the training PCA; applies the ridge.
    Predictions are in the training expression space (``normalize``: ``"log1p_cp10k"``
    = log1p of counts per 10k; ``"none"`` = the values as given).

    Attributes
    ----------
    genes
        Predicted genes.
    inputs
        ``obsm`` keys it reads, in order.
    input_dims
        Width of each input embedding.
    rings
        Neighbouring-spot context (0 = none).
    n_pcs, alpha
        Fitted PCA size and ridge penalty.
    normalize
        Normalisation applied to the training expression (``"log1p_cp10k"``/``"none"``).
    layer
        Layer the training expression came from (``None`` = ``X``).
    scaling
        Fitted feature scaling, or ``None`` (PCA on the features as they are).
    pca_mean, pca_components, ridge_coef, ridge_intercept
        Fitted arrays (float64): ``Z = (x - pca_mean) @ pca_components.T`` and
        ``y = Z @ ridge_coef.T + ridge_intercept``.
    """

    genes: list[str]
    inputs: tuple[str, ...]
    input_dims: tuple[int, ...]
    rings: float
    n_pcs: int
    alpha: float
    normalize: str
    layer: str | None
    scaling: FeatureScaling | None
    pca_mean: np.ndarray
    pca_components: np.ndarray
    ridge_coef: np.ndarray
    ridge_intercept: np.ndarray

    @property
    def use_rep(self) -> str:
        """The input key (several keys joined by ``+``)."""
        return "+".join(self.inputs)

    @classmethod
    def fit(
        cls,
        blocks: Sequence[np.ndarray] | np.ndarray,
        target: np.ndarray,
        genes: Sequence[str],
        *,
        use_rep: str | Sequence[str] = IMAGE_KEY,
        rings: float = 0.0,
        scale: bool | None = None,
        n_pcs: int = 256,
        alpha: float | None = None,
        normalize: str = "log1p_cp10k",
        layer: str | None = None,
        seed: int = 0,
    ) -> ExpressionPredictor:
        """Fit scaling, PCA and ridge on training features and expression.

        Parameters
        ----------
        blocks
            Training features, one array per input key (as :func:`input_blocks` returns),
            or a single array for a single key.
        target
            Training expression (spots x genes), already normalised.
        genes
            Names of the target columns.
        use_rep, rings
            Input keys and the context they were built with (recorded for prediction).
        scale
            Standardise and weight the blocks (``combine_embeddings``); default: when
            there are several inputs (one embedding goes into PCA as it is, HEST).
        n_pcs, alpha, seed
            PCA size (capped by spots - 1 and features), ridge penalty (default
            ``100 / (n_pcs * n_genes)``), random state.
        normalize, layer
            How ``target`` was made (recorded, used when scoring new spots).

        Returns
        -------
        The fitted predictor.
        """
        from sklearn.decomposition import PCA
        from sklearn.linear_model import Ridge

        inputs = _as_inputs(use_rep)
        if isinstance(blocks, np.ndarray):
            blocks = [blocks]
        blocks = [np.asarray(b, dtype=np.float64) for b in blocks]
        if len(blocks) != len(inputs):
            msg = f"{len(blocks)} feature blocks for {len(inputs)} inputs {list(inputs)}."
            raise KbfmInputError(msg)
        target = np.asarray(target, dtype=np.float64)
        target = target.reshape(len(target), -1)
        if target.shape[1] != len(genes):
            msg = f"target has {target.shape[1]} columns for {len(genes)} genes."
            raise KbfmInputError(msg)
        scale = len(inputs) > 1 if scale is None else bool(scale)
        scaling = FeatureScaling.fit(blocks, inputs) if scale else None
        X = scaling.transform(blocks) if scaling is not None else np.concatenate(blocks, axis=1)
        n_comp = int(min(n_pcs, X.shape[0] - 1, X.shape[1]))
        if n_comp < 1:
            msg = f"Need at least 2 training spots to fit, got {X.shape[0]}."
            raise KbfmInputError(msg)
        pca = PCA(n_components=n_comp, random_state=seed).fit(X)
        Z = pca.transform(X)
        alpha = 100.0 / (Z.shape[1] * target.shape[1]) if alpha is None else float(alpha)
        ridge = Ridge(alpha=alpha, solver="lsqr", max_iter=1000, random_state=seed).fit(Z, target)
        return cls(
            genes=list(genes),
            inputs=inputs,
            input_dims=tuple(int(b.shape[1]) for b in blocks),
            rings=float(rings),
            n_pcs=n_comp,
            alpha=float(alpha),
            normalize=normalize,
            layer=layer,
            scaling=scaling,
            pca_mean=np.array(pca.mean_, dtype=np.float64),
            pca_components=np.array(pca.components_, dtype=np.float64, order="C"),
            ridge_coef=np.array(ridge.coef_, dtype=np.float64, order="C").reshape(
                target.shape[1], -1
            ),
            ridge_intercept=np.array(ridge.intercept_, dtype=np.float64).reshape(-1),
        )

    def features(self, blocks: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Scale and concatenate unscaled blocks as at fitting time (spots x features)."""
        if isinstance(blocks, np.ndarray):
            blocks = [blocks] if len(self.inputs) == 1 else _split(blocks, self.input_dims)
        blocks = [np.asarray(b, dtype=np.float64) for b in blocks]
        shapes = tuple(b.shape[1] if b.ndim == 2 else -1 for b in blocks)
        if shapes != self.input_dims:
            msg = (
                f"Embedding widths {shapes} do not match the {self.input_dims} the predictor "
                f"was fitted on ({list(self.inputs)}, rings={self.rings:g}); embed with the "
                "same encoder and options."
            )
            raise KbfmInputError(msg)
        if self.scaling is not None:
            return self.scaling.transform(blocks)
        return np.concatenate(blocks, axis=1)

    def predict_array(self, blocks: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Predict expression (spots x genes) from unscaled feature blocks.

        Parameters
        ----------
        blocks
            One array per input key, with the context already appended when
            ``rings > 0`` (:func:`input_blocks`), or those blocks concatenated.

        Returns
        -------
        float32 predictions, spots x genes.
        """
        X = self.features(blocks)
        Z = (X - self.pca_mean) @ self.pca_components.T
        predicted = Z @ self.ridge_coef.T + self.ridge_intercept
        return predicted.astype(np.float32)

    def predict(
        self,
        adata: AnnData,
        *,
        groupby: str | None = None,
        key_added: str = PREDICTED_KEY,
    ) -> None:
        """Write predicted expression of new spots (image only) into ``obsm[key_added]``.

        Parameters
        ----------
        adata
            Spots with ``obsm[k]`` for every key in ``inputs``, computed by the same
            encoder and options (and ``obsm['spatial']`` when ``rings > 0``).
        groupby
            ``obs`` column with sections when ``adata`` holds several (context only).
        key_added
            ``obsm`` key of the DataFrame (spots x genes) of predictions.
        """
        blocks = input_blocks(adata, self.inputs, rings=self.rings, groupby=groupby)
        pred = self.predict_array(blocks)
        adata.obsm[key_added] = pd.DataFrame(pred, index=adata.obs_names, columns=self.genes)
        record_step(
            adata,
            "predict_expression_new",
            use_rep=self.use_rep,
            inputs=list(self.inputs),
            rings=self.rings,
            scaled=self.scaling is not None,
            key_added=key_added,
            genes=self.genes,
            n_pcs=self.n_pcs,
            alpha=self.alpha,
        )

    def score(
        self, adata: AnnData, *, layer: str | None = None, groupby: str | None = None
    ) -> pd.Series:
        """Pearson r of every predicted gene that ``adata`` has expression for.

        The expression is normalised as the training expression was (``normalize``).

        Parameters
        ----------
        adata
            Spots with the input embeddings and expression (counts when the training
            expression was counts).
        layer
            Expression layer (default: the training layer, else ``X``).
        groupby
            As in :meth:`predict`.

        Returns
        -------
        Pearson r per gene (NaN for a constant gene), in ``genes`` order; predicted genes
        absent from ``adata.var_names`` are left out (empty when none is present).
        """
        if adata.n_vars == 0:
            return pd.Series([], index=pd.Index([], dtype=object), dtype=np.float64)
        X, names = expression_matrix(adata, layer=layer or self.layer)
        index = {g: i for i, g in enumerate(names)}
        present = [g for g in self.genes if g in index]
        if not present:
            return pd.Series([], index=pd.Index([], dtype=object), dtype=np.float64)
        if self.normalize == "log1p_cp10k" and not looks_like_counts(X):
            msg = (
                "The predictor was fitted on counts (scored as log1p counts per 10k), but "
                "this expression holds non-integer values; pass the counts layer."
            )
            raise KbfmInputError(msg)
        Xn, _ = normalized_expression(adata, layer=layer or self.layer, normalize=self.normalize)
        measured = _dense(Xn[:, [index[g] for g in present]])
        blocks = input_blocks(adata, self.inputs, rings=self.rings, groupby=groupby)
        pred = self.predict_array(blocks)[:, [self.genes.index(g) for g in present]]
        return pd.Series(pearson_per_gene(measured, pred), index=present, dtype=np.float64)

    def save(self, path: str | os.PathLike) -> Path:
        """Save to a folder: ``predictor.json`` (settings) + ``predictor.safetensors``.

        Both files are written atomically; the JSON records the SHA-256 of the arrays, so
        a folder holding files from two different saves is refused on loading.

        Parameters
        ----------
        path
            Folder (created when missing).

        Returns
        -------
        The folder.
        """
        from safetensors.numpy import save

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {
            "pca_mean": self.pca_mean,
            "pca_components": self.pca_components,
            "ridge_coef": self.ridge_coef,
            "ridge_intercept": self.ridge_intercept,
        }
        if self.scaling is not None:
            arrays |= {"scaling_mean": self.scaling.mean, "scaling_std": self.scaling.std}
            if self.scaling.low is not None and self.scaling.high is not None:
                arrays |= {"scaling_low": self.scaling.low, "scaling_high": self.scaling.high}
        blob = save({k: np.ascontiguousarray(v, dtype=np.float64) for k, v in arrays.items()})
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kbfm_version": __version__,
            "genes": list(self.genes),
            "inputs": list(self.inputs),
            "input_dims": list(self.input_dims),
            "rings": self.rings,
            "scaled": self.scaling is not None,
            "n_pcs": self.n_pcs,
            "alpha": self.alpha,
            "normalize": self.normalize,
            "target_sum": _TARGET_SUM if self.normalize == "log1p_cp10k" else None,
            "layer": self.layer,
            "arrays_sha256": hashlib.sha256(blob).hexdigest(),
        }
        from .._atomic import atomic_write_bytes, atomic_write_text

        atomic_write_bytes(folder / _ARRAYS, blob)
        atomic_write_text(folder / _META, json.dumps(meta, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike) -> ExpressionPredictor:
        """Load a predictor written by :meth:`save` (no pickle is read).

        Parameters
        ----------
        path
            The folder.

        Returns
        -------
        The predictor; its predictions equal those of the one that was saved.
        """
        from safetensors import SafetensorError
        from safetensors.numpy import load

        folder = Path(path)
        meta_path, arrays_path = folder / _META, folder / _ARRAYS
        if not meta_path.is_file() or not arrays_path.is_file():
            msg = f"{folder} is not a saved expression predictor (needs {_META} and {_ARRAYS})."
            raise KbfmInputError(msg)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            msg = f"{meta_path} is not valid JSON ({err})."
            raise KbfmInputError(msg) from err
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            msg = f"{meta_path} does not describe a kbfm expression predictor."
            raise KbfmInputError(msg)
        if meta.get("format_version") != FORMAT_VERSION:
            msg = (
                f"{meta_path} has format_version {meta.get('format_version')!r}; this kbfm "
                f"reads version {FORMAT_VERSION}."
            )
            raise KbfmInputError(msg)
        blob = arrays_path.read_bytes()
        if hashlib.sha256(blob).hexdigest() != meta.get("arrays_sha256"):
            msg = f"{arrays_path} does not match {meta_path} (a different or damaged save)."
            raise KbfmInputError(msg)
        try:
            arrays = {k: np.array(v, dtype=np.float64) for k, v in load(blob).items()}
            inputs = tuple(str(k) for k in meta["inputs"])
            dims = tuple(int(d) for d in meta["input_dims"])
            scaling = None
            if meta["scaled"]:
                scaling = FeatureScaling(
                    inputs,
                    dims,
                    arrays["scaling_mean"],
                    arrays["scaling_std"],
                    arrays.get("scaling_low"),
                    arrays.get("scaling_high"),
                )
            model = cls(
                genes=[str(g) for g in meta["genes"]],
                inputs=inputs,
                input_dims=dims,
                rings=float(meta["rings"]),
                n_pcs=int(meta["n_pcs"]),
                alpha=float(meta["alpha"]),
                normalize=str(meta["normalize"]),
                layer=meta["layer"],
                scaling=scaling,
                pca_mean=arrays["pca_mean"],
                pca_components=arrays["pca_components"],
                ridge_coef=arrays["ridge_coef"],
                ridge_intercept=arrays["ridge_intercept"],
            )
        except (KeyError, TypeError, ValueError, SafetensorError) as err:
            msg = f"{folder} holds an incomplete or malformed predictor ({err!r})."
            raise KbfmInputError(msg) from err
        model._check_shapes(folder)
        return model

    def _check_shapes(self, where: Path) -> None:
        width = sum(self.input_dims)
        ok = (
            self.pca_mean.shape == (width,)
            and self.pca_components.shape == (self.n_pcs, width)
            and self.ridge_coef.shape == (len(self.genes), self.n_pcs)
            and self.ridge_intercept.shape == (len(self.genes),)
            and self.normalize in ("log1p_cp10k", "none")
            and (self.scaling is None or self.scaling.mean.shape == (width,))
            and (self.scaling is None or self.scaling.std.shape == (width,))
            and (self.scaling is None or (self.scaling.low is None) == (self.scaling.high is None))
            and (
                self.scaling is None
                or self.scaling.low is None
                or self.scaling.low.shape == (width,)
            )
            and (
                self.scaling is None
                or self.scaling.high is None
                or self.scaling.high.shape == (width,)
            )
        )
        if not ok:
            msg = f"{where} holds arrays whose shapes do not fit its settings."
            raise KbfmInputError(msg)


def _split(X: np.ndarray, dims: Sequence[int]) -> list[np.ndarray]:
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != sum(dims):
        msg = f"Features have shape {X.shape}; the predictor expects {sum(dims)} columns."
        raise KbfmInputError(msg)
    return np.split(X, np.cumsum(dims)[:-1], axis=1)


def _splits(adata: AnnData, groupby: str | None, n_splits: int, seed: int):
    if groupby is not None:
        if groupby not in adata.obs:
            msg = (
                f"groupby={groupby!r} is not a column of adata.obs; choose from {list(adata.obs)}."
            )
            raise KbfmInputError(msg)
        groups = adata.obs[groupby].astype(str).to_numpy()
        names = sorted(set(groups))
        if len(names) < 2:
            msg = f"obs[{groupby!r}] has a single group {names}; cross-validation needs >= 2."
            raise KbfmInputError(msg)
        return [(name, groups != name, groups == name) for name in names], "leave-one-group-out"
    if not isinstance(n_splits, int) or isinstance(n_splits, bool) or n_splits < 2:
        msg = f"n_splits must be an integer >= 2 for k-fold cross-validation, got {n_splits!r}."
        raise KbfmInputError(msg)
    if adata.n_obs < n_splits:
        msg = (
            f"{n_splits}-fold cross-validation over spots needs at least {n_splits} spots; "
            f"adata has {adata.n_obs}. Pass more spots, a smaller n_splits, or fit on all "
            "spots with fit_expression_predictor and score another slide."
        )
        raise KbfmInputError(msg)
    from sklearn.model_selection import KFold

    folds = KFold(n_splits=n_splits, shuffle=True, random_state=seed).split(np.arange(adata.n_obs))
    out = []
    for k, (tr, _te) in enumerate(folds):
        train = np.zeros(adata.n_obs, bool)
        train[tr] = True
        out.append((f"fold{k}", train, ~train))
    return out, "kfold-spots (optimistic: neighbouring spots share tissue)"


def _check_genes(genes: Sequence[str], names: Sequence[str]) -> list[str]:
    genes = list(genes)
    known = set(names)
    unknown = [g for g in genes if g not in known]
    if unknown:
        shown = ", ".join(unknown[:20]) + (" ..." if len(unknown) > 20 else "")
        msg = f"{len(unknown)} of {len(genes)} genes are not in var_names: {shown}."
        raise KbfmInputError(msg)
    if not genes or len(set(genes)) != len(genes):
        msg = "genes must be a non-empty list without duplicates."
        raise KbfmInputError(msg)
    return genes


@dataclass
class _Fold:
    name: str
    train: np.ndarray
    test: np.ndarray
    model: ExpressionPredictor


def _fold_models(
    adata: AnnData,
    *,
    use_rep: str | Sequence[str],
    groupby: str | None,
    genes: Sequence[str] | None,
    n_genes: int,
    settings: dict,
) -> Iterator[tuple[_Fold, list[np.ndarray], np.ndarray | sp.csr_matrix, list[str]]]:
    """Fit one predictor per fold on its training spots only; yield it with the data."""
    inputs = _as_inputs(use_rep)
    blocks = input_blocks(adata, inputs, rings=settings["rings"], groupby=groupby)
    X, names, mode = _normalized(adata, layer=settings["layer"], normalize=settings["normalize"])
    fixed = None if genes is None else _check_genes(genes, names)
    index = {g: i for i, g in enumerate(names)}
    folds, _scheme = _splits(adata, groupby, settings["n_splits"], settings["seed"])
    for name, train, test in folds:
        X_train = X[train]
        fold_genes = fixed if fixed is not None else top_variable_genes(X_train, names, n_genes)
        model = ExpressionPredictor.fit(
            [b[train] for b in blocks],
            _dense(X_train[:, [index[g] for g in fold_genes]]),
            fold_genes,
            use_rep=inputs,
            rings=settings["rings"],
            scale=settings["scale"],
            n_pcs=settings["n_pcs"],
            alpha=settings["alpha"],
            normalize=mode,
            layer=settings["layer"],
            seed=settings["seed"],
        )
        yield _Fold(name, train, test, model), blocks, X, names


def predict_expression(
    adata: AnnData,
    *,
    use_rep: str | Sequence[str] = IMAGE_KEY,
    groupby: str | None = None,
    genes: Sequence[str] | None = None,
    n_genes: int = 50,
    n_pcs: int = 256,
    alpha: float | None = None,
    rings: float = 0.0,
    scale: bool | None = None,
    layer: str | None = None,
    normalize: str = "auto",
    n_splits: int = 5,
    seed: int = 0,
    key_added: str = PREDICTED_KEY,
    copy: bool = False,
) -> AnnData | None:
    """Cross-validated expression prediction from an embedding (HEST protocol).

    Each fold fits everything on its training spots only: the ``n_genes`` most variable
    genes (unless ``genes`` fixes the list), the feature scaling, the PCA and the ridge.
    The held-out spots are only predicted and scored, so they cannot influence what is
    fitted. Each fold is scored on the genes it selected; ``mean_r`` of a fold is the mean
    Pearson r over those genes, ``mean_r_overall`` the mean over folds.

    Parameters
    ----------
    adata
        Spots with expression and ``obsm[use_rep]``.
    use_rep
        Embedding to predict from (e.g. ``"X_image"``), or several ``obsm`` keys to
        combine (each standardised with the training spots' statistics and weighted by
        ``1/sqrt(dim)``, as :func:`~kbfm.im.combine_embeddings` does).
    groupby
        ``obs`` column with the section/slide; each group is held out once. Without it,
        ``n_splits``-fold CV over spots (optimistic; reported as such).
    genes
        Genes to predict, the same in every fold (no selection). Default: the ``n_genes``
        most variable genes of each fold's training spots.
    n_genes
        Number of most variable genes when ``genes`` is not given.
    n_pcs
        PCA components fitted on the training spots of each fold.
    alpha
        Ridge penalty (default HEST: ``100 / (n_pcs * n_genes)``).
    rings
        Append the mean embedding of the spots this many grid steps around each spot,
        within each ``groupby`` group (0 = off; :func:`kbfm.tl.spatial_context`).
    scale
        Standardise the blocks with training statistics (default: when several keys).
    layer
        Expression layer (default ``X``).
    normalize
        ``"auto"`` (integer counts -> log1p of counts per 10k), ``"log1p_cp10k"``, ``"none"``.
    n_splits, seed
        K-fold settings when ``groupby`` is ``None``; seed of PCA/ridge.
    key_added
        ``obsm`` key for out-of-fold predictions (DataFrame spots x genes, the union of
        the folds' genes; NaN where a spot's fold did not select the gene).
    copy
        Return a modified copy.

    Returns
    -------
    ``None`` (or the copy). Writes ``obsm[key_added]`` and
    ``uns['kbfm_predict_expression']`` with ``pearson`` (genes x folds DataFrame, NaN
    where a fold did not select the gene), ``mean_r`` per fold, ``mean_r_overall``,
    ``genes_per_fold``, ``genes`` (the union, most often selected first), and the
    settings; provenance in ``uns['kbfm']['predict_expression']``.

    Examples
    --------
    >>> predict_expression(adata, use_rep="X_image", groupby="library_id")  # doctest: +SKIP
    >>> adata.uns["kbfm_predict_expression"]["mean_r"]  # doctest: +SKIP
    {'C2': 0.31, 'C3': 0.35, ...}
    """
    check_adata(adata)
    adata = adata.copy() if copy else adata
    settings = {
        "rings": float(rings),
        "scale": scale,
        "n_pcs": n_pcs,
        "alpha": alpha,
        "layer": layer,
        "normalize": normalize,
        "n_splits": n_splits,
        "seed": seed,
    }
    _folds, scheme = _splits(adata, groupby, n_splits, seed)
    pearson, per_fold, predictions = {}, {}, []
    for fold, blocks, X, names in _fold_models(
        adata, use_rep=use_rep, groupby=groupby, genes=genes, n_genes=n_genes, settings=settings
    ):
        model = fold.model
        index = {g: i for i, g in enumerate(names)}
        measured = _dense(X[fold.test][:, [index[g] for g in model.genes]])
        pred = model.predict_array([b[fold.test] for b in blocks])
        pearson[fold.name] = pd.Series(pearson_per_gene(measured, pred), index=model.genes)
        per_fold[fold.name] = list(model.genes)
        predictions.append((fold.test, model.genes, pred))
    if genes is not None:
        union = list(genes)
    else:  # most often selected first, then in the order the folds ranked them
        seen = [g for gs in per_fold.values() for g in gs]
        first = {g: i for i, g in reversed(list(enumerate(seen)))}
        union = sorted(first, key=lambda g: (-seen.count(g), first[g]))
    table = pd.DataFrame(pearson).reindex(union)
    column = {g: j for j, g in enumerate(union)}
    values = np.full((adata.n_obs, len(union)), np.nan, dtype=np.float32)
    for test, fold_genes, pred in predictions:
        values[np.ix_(np.flatnonzero(test), [column[g] for g in fold_genes])] = pred
    predicted = pd.DataFrame(values, index=adata.obs_names, columns=union)
    mean_r = {k: float(np.nanmean(v)) for k, v in pearson.items()}
    selection = (
        "fixed (genes=)"
        if genes is not None
        else f"top-{n_genes} by variance on each fold's training spots"
    )
    inputs = list(_as_inputs(use_rep))
    adata.obsm[key_added] = predicted
    adata.uns[RESULT_KEY] = {
        "pearson": table,
        "mean_r": mean_r,
        "mean_r_overall": float(np.mean(list(mean_r.values()))),
        "genes": union,
        "genes_per_fold": per_fold,
        "gene_selection": selection,
        "scheme": scheme,
        "use_rep": "+".join(inputs),
    }
    record_step(
        adata,
        "predict_expression",
        use_rep="+".join(inputs),
        inputs=inputs,
        rings=float(rings),
        groupby=groupby,
        scheme=scheme,
        gene_selection=selection,
        genes=union,
        n_pcs=n_pcs,
        alpha="100/(n_pcs*n_genes)" if alpha is None else alpha,
        normalize=normalize,
        mean_r=mean_r,
        key_added=key_added,
    )
    logger.info("predict_expression: mean Pearson r %s", mean_r)
    return adata if copy else None


def fit_expression_predictor(
    adata: AnnData,
    *,
    use_rep: str | Sequence[str] = IMAGE_KEY,
    genes: Sequence[str] | None = None,
    n_genes: int = 50,
    n_pcs: int = 256,
    alpha: float | None = None,
    rings: float = 0.0,
    groupby: str | None = None,
    scale: bool | None = None,
    layer: str | None = None,
    normalize: str = "auto",
    seed: int = 0,
) -> ExpressionPredictor:
    """Fit the whole pipeline on all spots, to predict slides that have only an image.

    Parameters
    ----------
    adata
        Training spots with expression and ``obsm[use_rep]``.
    use_rep, genes, n_genes, n_pcs, alpha, rings, scale, layer, normalize, seed
        As in :func:`predict_expression` (genes are selected on these spots).
    groupby
        ``obs`` column with sections, so the neighbouring-spot context (``rings``)
        stays within each.

    Returns
    -------
    An :class:`ExpressionPredictor`; call ``.predict(new_adata)``, ``.score(new_adata)``
    when it has expression, ``.save(folder)``.

    Examples
    --------
    >>> model = fit_expression_predictor(train)  # doctest: +SKIP
    >>> model.predict(new_slide)  # doctest: +SKIP
    >>> new_slide.obsm["kbfm_predicted_expression"]["ERBB2"]  # doctest: +SKIP
    """
    check_adata(adata)
    inputs = _as_inputs(use_rep)
    blocks = input_blocks(adata, inputs, rings=rings, groupby=groupby)
    X, names, mode = _normalized(adata, layer=layer, normalize=normalize)
    genes = top_variable_genes(X, names, n_genes) if genes is None else _check_genes(genes, names)
    index = {g: i for i, g in enumerate(names)}
    return ExpressionPredictor.fit(
        blocks,
        _dense(X[:, [index[g] for g in genes]]),
        genes,
        use_rep=inputs,
        rings=rings,
        scale=scale,
        n_pcs=n_pcs,
        alpha=alpha,
        normalize=mode,
        layer=layer,
        seed=seed,
    )
