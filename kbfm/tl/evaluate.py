"""Annotation metrics: accuracy, macro-F1 and ontology-aware agreement."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._errors import KbfmInputError


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

    from ..knowledge import CellOntology

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
