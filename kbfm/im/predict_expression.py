"""Predict spot expression from image embeddings (HEST-Benchmark protocol).

Protocol: target genes are the ``n_genes`` most variable genes (variance of the
normalised expression over all spots); per fold, the embeddings are reduced by PCA fitted
on the training spots to ``n_pcs`` (256) dimensions, a ridge regression with
``alpha = 100 / (n_pcs * n_genes)`` is fitted, and each held-out section is scored by the
Pearson r of every gene. Folds hold out one section/slide at a time (``groupby``), so a
score measures transfer to an unseen section.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._errors import KbfmInputError
from .._keys import IMAGE_KEY, PREDICTED_KEY, RESULT_KEY
from .._provenance import record_step
from .._validate import check_adata, expression_matrix
from ..metrics import pearson_per_gene

logger = logging.getLogger(__name__)


def normalized_expression(
    adata: AnnData, *, layer: str | None = None, normalize: str = "auto"
) -> tuple[np.ndarray | sp.csr_matrix, list[str]]:
    """Return ``log1p`` of counts scaled to 10,000 per spot (or the matrix as given).

    ``normalize="auto"`` normalises integer counts and leaves non-integer values
    (already normalised) alone; ``"log1p_cp10k"`` always normalises; ``"none"`` never.
    """
    X, genes = expression_matrix(adata, layer=layer)
    values = X.data if sp.issparse(X) else X
    if normalize not in ("auto", "log1p_cp10k", "none"):
        msg = f"normalize must be 'auto', 'log1p_cp10k' or 'none', got {normalize!r}."
        raise KbfmInputError(msg)
    is_counts = values.size == 0 or np.allclose(values[:100_000], np.round(values[:100_000]))
    if normalize == "none" or (normalize == "auto" and not is_counts):
        return X, genes
    totals = np.asarray(X.sum(axis=1)).ravel()
    scale = np.divide(1e4, totals, out=np.zeros_like(totals, dtype=np.float64), where=totals > 0)
    if sp.issparse(X):
        Y = sp.diags(scale) @ X
        Y.data = np.log1p(Y.data)
        return Y.tocsr(), genes
    return np.log1p(X * scale[:, None]), genes


def top_variable_genes(X: np.ndarray | sp.csr_matrix, genes: list[str], n: int) -> list[str]:
    """Return the ``n`` genes with the largest variance (ties broken by name order)."""
    if sp.issparse(X):
        mean = np.asarray(X.mean(axis=0)).ravel()
        var = np.asarray(X.multiply(X).mean(axis=0)).ravel() - mean**2
    else:
        var = np.asarray(X).var(axis=0)
    order = np.argsort(-var, kind="stable")[:n]
    return [genes[i] for i in order]


@dataclass
class ExpressionPredictor:
    """PCA + ridge from an embedding to expression, fitted on spots with expression.

    Attributes
    ----------
    genes
        Predicted genes.
    use_rep
        ``obsm`` key of the embedding it expects.
    n_pcs, alpha
        Fitted PCA size and ridge penalty.
    """

    genes: list[str]
    use_rep: str
    n_pcs: int
    alpha: float
    _pca: object = field(repr=False, default=None)
    _ridge: object = field(repr=False, default=None)
    input_dim: int = 0

    @classmethod
    def fit(
        cls,
        embedding: np.ndarray,
        target: np.ndarray,
        genes: list[str],
        *,
        use_rep: str = IMAGE_KEY,
        n_pcs: int = 256,
        alpha: float | None = None,
        seed: int = 0,
    ) -> ExpressionPredictor:
        """Fit PCA on ``embedding`` then ridge onto ``target`` (spots x genes)."""
        from sklearn.decomposition import PCA
        from sklearn.linear_model import Ridge

        embedding = np.asarray(embedding, dtype=np.float64)
        n_comp = int(min(n_pcs, embedding.shape[0] - 1, embedding.shape[1]))
        if n_comp < 1:
            msg = f"Need at least 2 training spots to fit, got {embedding.shape[0]}."
            raise KbfmInputError(msg)
        pca = PCA(n_components=n_comp, random_state=seed).fit(embedding)
        Z = pca.transform(embedding)
        alpha = 100.0 / (Z.shape[1] * target.shape[1]) if alpha is None else float(alpha)
        ridge = Ridge(alpha=alpha, solver="lsqr", max_iter=1000, random_state=seed).fit(Z, target)
        return cls(list(genes), use_rep, n_comp, alpha, pca, ridge, embedding.shape[1])

    def predict_array(self, embedding: np.ndarray) -> np.ndarray:
        """Predict expression (spots x genes) from an embedding array."""
        embedding = np.asarray(embedding, dtype=np.float64)
        if embedding.ndim != 2 or embedding.shape[1] != self.input_dim:
            msg = (
                f"Embedding has shape {embedding.shape}; the predictor was fitted on "
                f"{self.input_dim}-d {self.use_rep!r} embeddings from the same encoder."
            )
            raise KbfmInputError(msg)
        predicted = self._ridge.predict(self._pca.transform(embedding))  # type: ignore[attr-defined]
        # sklearn returns 1-d predictions for a single target gene; keep spots x genes
        return predicted.reshape(len(embedding), -1).astype(np.float32)

    def predict(self, adata: AnnData, *, key_added: str = PREDICTED_KEY) -> None:
        """Write predicted expression of new spots (image only) into ``obsm[key_added]``.

        Parameters
        ----------
        adata
            Spots with ``obsm[self.use_rep]`` computed by the same encoder and options.
        key_added
            ``obsm`` key of the DataFrame (spots x genes) of predictions.
        """
        if self.use_rep not in adata.obsm:
            msg = f"adata.obsm[{self.use_rep!r}] is missing; run kbfm.im.embed_image first."
            raise KbfmInputError(msg)
        pred = self.predict_array(adata.obsm[self.use_rep])
        adata.obsm[key_added] = pd.DataFrame(pred, index=adata.obs_names, columns=self.genes)
        record_step(
            adata,
            "predict_expression_new",
            use_rep=self.use_rep,
            key_added=key_added,
            genes=self.genes,
            n_pcs=self.n_pcs,
            alpha=self.alpha,
        )


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
    from sklearn.model_selection import KFold

    folds = KFold(n_splits=n_splits, shuffle=True, random_state=seed).split(np.arange(adata.n_obs))
    out = []
    for k, (tr, _te) in enumerate(folds):
        train = np.zeros(adata.n_obs, bool)
        train[tr] = True
        out.append((f"fold{k}", train, ~train))
    return out, "kfold-spots (optimistic: neighbouring spots share tissue)"


def predict_expression(
    adata: AnnData,
    *,
    use_rep: str = IMAGE_KEY,
    groupby: str | None = None,
    genes: list[str] | None = None,
    n_genes: int = 50,
    n_pcs: int = 256,
    alpha: float | None = None,
    layer: str | None = None,
    normalize: str = "auto",
    n_splits: int = 5,
    seed: int = 0,
    key_added: str = PREDICTED_KEY,
    copy: bool = False,
) -> AnnData | None:
    """Cross-validated expression prediction from an embedding (HEST protocol).

    Parameters
    ----------
    adata
        Spots with expression and ``obsm[use_rep]``.
    use_rep
        Embedding to predict from (e.g. ``"X_image"``).
    groupby
        ``obs`` column with the section/slide; each group is held out once. Without it,
        ``n_splits``-fold CV over spots (optimistic; reported as such).
    genes
        Genes to predict (default: the ``n_genes`` most variable).
    n_genes
        Number of most variable genes when ``genes`` is not given.
    n_pcs
        PCA components fitted on the training spots of each fold.
    alpha
        Ridge penalty (default HEST: ``100 / (n_pcs * n_genes)``).
    layer
        Expression layer (default ``X``).
    normalize
        ``"auto"`` (integer counts -> log1p of counts per 10k), ``"log1p_cp10k"``, ``"none"``.
    n_splits, seed
        K-fold settings when ``groupby`` is ``None``; seed of PCA/ridge.
    key_added
        ``obsm`` key for out-of-fold predictions (DataFrame spots x genes).
    copy
        Return a modified copy.

    Returns
    -------
    ``None`` (or the copy). Writes ``obsm[key_added]`` and
    ``uns['kbfm_predict_expression']`` with ``pearson`` (genes x folds DataFrame),
    ``mean_r`` per fold, ``mean_r_overall`` and the settings; provenance in
    ``uns['kbfm']['predict_expression']``.

    Examples
    --------
    >>> predict_expression(adata, use_rep="X_image", groupby="library_id")  # doctest: +SKIP
    >>> adata.uns["kbfm_predict_expression"]["mean_r"]  # doctest: +SKIP
    {'C2': 0.31, 'C3': 0.35, ...}
    """
    check_adata(adata)
    adata = adata.copy() if copy else adata
    if use_rep not in adata.obsm:
        msg = f"adata.obsm[{use_rep!r}] is missing; run kbfm.im.embed_image first."
        raise KbfmInputError(msg)
    embedding = np.asarray(adata.obsm[use_rep], dtype=np.float64)
    if not np.isfinite(embedding).all():
        msg = f"adata.obsm[{use_rep!r}] holds NaN or infinite values."
        raise KbfmInputError(msg)
    X, names = normalized_expression(adata, layer=layer, normalize=normalize)
    if genes is None:
        genes = top_variable_genes(X, names, n_genes)
    else:
        unknown = [g for g in genes if g not in set(names)]
        if unknown:
            msg = f"{len(unknown)} genes not in var_names, e.g. {unknown[:5]}."
            raise KbfmInputError(msg)
    index = {g: i for i, g in enumerate(names)}
    Y = X[:, [index[g] for g in genes]]
    Y = np.asarray(Y.toarray() if sp.issparse(Y) else Y, dtype=np.float64)
    folds, scheme = _splits(adata, groupby, n_splits, seed)
    predicted = np.zeros_like(Y, dtype=np.float32)
    pearson = {}
    for name, train, test in folds:
        model = ExpressionPredictor.fit(
            embedding[train], Y[train], genes, use_rep=use_rep, n_pcs=n_pcs, alpha=alpha, seed=seed
        )
        predicted[test] = model.predict_array(embedding[test])
        pearson[name] = pearson_per_gene(Y[test], predicted[test])
    table = pd.DataFrame(pearson, index=genes)
    mean_r = {k: float(np.nanmean(v)) for k, v in table.items()}
    adata.obsm[key_added] = pd.DataFrame(predicted, index=adata.obs_names, columns=genes)
    adata.uns[RESULT_KEY] = {
        "pearson": table,
        "mean_r": mean_r,
        "mean_r_overall": float(np.mean(list(mean_r.values()))),
        "scheme": scheme,
        "use_rep": use_rep,
    }
    record_step(
        adata,
        "predict_expression",
        use_rep=use_rep,
        groupby=groupby,
        scheme=scheme,
        genes=list(genes),
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
    use_rep: str = IMAGE_KEY,
    genes: list[str] | None = None,
    n_genes: int = 50,
    n_pcs: int = 256,
    alpha: float | None = None,
    layer: str | None = None,
    normalize: str = "auto",
    seed: int = 0,
) -> ExpressionPredictor:
    """Fit the PCA + ridge model on all spots, to predict slides that have only an image.

    Parameters
    ----------
    adata
        Training spots with expression and ``obsm[use_rep]``.
    use_rep, genes, n_genes, n_pcs, alpha, layer, normalize, seed
        As in :func:`predict_expression`.

    Returns
    -------
    An :class:`ExpressionPredictor`; call ``.predict(new_adata)``.

    Examples
    --------
    >>> model = fit_expression_predictor(train)  # doctest: +SKIP
    >>> model.predict(new_slide)  # doctest: +SKIP
    >>> new_slide.obsm["kbfm_predicted_expression"]["ERBB2"]  # doctest: +SKIP
    """
    check_adata(adata)
    if use_rep not in adata.obsm:
        msg = f"adata.obsm[{use_rep!r}] is missing; run kbfm.im.embed_image first."
        raise KbfmInputError(msg)
    X, names = normalized_expression(adata, layer=layer, normalize=normalize)
    genes = genes or top_variable_genes(X, names, n_genes)
    index = {g: i for i, g in enumerate(names)}
    missing = [g for g in genes if g not in index]
    if missing:
        msg = f"{len(missing)} genes not in var_names, e.g. {missing[:5]}."
        raise KbfmInputError(msg)
    Y = X[:, [index[g] for g in genes]]
    Y = np.asarray(Y.toarray() if sp.issparse(Y) else Y, dtype=np.float64)
    return ExpressionPredictor.fit(
        adata.obsm[use_rep], Y, genes, use_rep=use_rep, n_pcs=n_pcs, alpha=alpha, seed=seed
    )
