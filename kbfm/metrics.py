"""Every score kbfm reports, in one place.

- :func:`evaluate_annotation`: accuracy, macro-F1 and ontology-aware agreement of
  Cell Ontology ids.
- :func:`evaluate_domains`: ARI and NMI of spatial domains against labels.
- :func:`pearson_per_gene`: Pearson r of every gene (column) between two matrices.

``kbfm.tl.evaluate_annotation`` and ``kbfm.tl.evaluate_domains`` are these functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from anndata import AnnData

from ._errors import KbfmInputError
from ._keys import DOMAIN_KEY

__all__ = ["evaluate_annotation", "evaluate_domains", "pearson_per_gene"]


def evaluate_annotation(
    truth_ids: Sequence[str], pred_ids: Sequence[str], *, ontology=None
) -> dict[str, float | int]:
    """Score predicted Cell Ontology ids against true ids.

    Parameters
    ----------
    truth_ids, pred_ids
        CL ids per cell, aligned. Map free-text labels to ids first (e.g. with
        :meth:`~kbfm.knowledge.CellOntology.lookup` or a curated dict).
    ontology
        A :class:`~kbfm.knowledge.CellOntology` (loaded when ``None``).

    Returns
    -------
    ``accuracy`` (exact id), ``macro_f1`` (over true classes), ``ontology_accuracy``
    (full match 1, ancestor/descendant 0.5, else 0; GPTCelltype's full/partial scheme),
    ``full``, ``partial``, ``none`` (fractions) and ``n``.

    Examples
    --------
    >>> evaluate_annotation(["CL:0000084"], ["CL:0000084"])["accuracy"]
    1.0
    """
    from sklearn.metrics import f1_score

    from .knowledge import CellOntology

    truth = [str(t) for t in truth_ids]
    pred = [str(p) for p in pred_ids]
    if len(truth) != len(pred) or not truth:
        msg = f"truth and predictions must be non-empty and aligned ({len(truth)} vs {len(pred)})."
        raise KbfmInputError(msg)
    onto = ontology or CellOntology.load()
    relations = [onto.relation(p, t) for p, t in zip(pred, truth, strict=True)]
    full = np.mean([r == "full" for r in relations])
    partial = np.mean([r == "partial" for r in relations])
    labels = sorted(set(truth))
    return {
        "accuracy": float(np.mean(np.asarray(truth) == np.asarray(pred))),
        "macro_f1": float(f1_score(truth, pred, labels=labels, average="macro", zero_division=0)),
        "ontology_accuracy": float(full + 0.5 * partial),
        "full": float(full),
        "partial": float(partial),
        "none": float(1.0 - full - partial),
        "n": len(truth),
    }


def evaluate_domains(adata: AnnData, label_key: str, *, key: str = DOMAIN_KEY) -> dict[str, float]:
    """ARI and NMI of ``obs[key]`` against ``obs[label_key]`` (spots without a label dropped)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    for k in (label_key, key):
        if k not in adata.obs:
            msg = f"obs[{k!r}] not found."
            raise KbfmInputError(msg)
    keep = adata.obs[label_key].notna().to_numpy()
    if not keep.any():
        msg = f"obs[{label_key!r}] has no labelled spot (all missing); nothing to score."
        raise KbfmInputError(msg)
    truth = adata.obs[label_key].to_numpy()[keep].astype(str)
    pred = adata.obs[key].to_numpy()[keep].astype(str)
    return {
        "ari": float(adjusted_rand_score(truth, pred)),
        "nmi": float(normalized_mutual_info_score(truth, pred)),
        "n": int(keep.sum()),
    }


def pearson_per_gene(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Pearson r of each column; NaN where either side is constant."""
    yt = y_true - y_true.mean(0)
    yp = y_pred - y_pred.mean(0)
    denom = np.sqrt((yt**2).sum(0) * (yp**2).sum(0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, (yt * yp).sum(0) / denom, np.nan)
