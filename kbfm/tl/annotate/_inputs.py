"""What every annotation method starts from and how the embedding methods write results.

Each method reads the expression, resolves the species, the groups and the candidate
cell types the same way (:func:`prepare_inputs`); ``zero_shot`` and ``marker_score``
then turn a cells x candidates score matrix into labels (:func:`write_scores`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData

from ..._errors import KbfmInputError
from ..._keys import AUTO_CLUSTER_KEY
from ..._provenance import record_step
from ..._validate import check_adata
from ...knowledge.species import resolve_species
from .._expression import log_expression
from ._candidates import needs_data, resolve_candidates

logger = logging.getLogger(__name__)


def auto_clusters(X, *, resolution: float = 1.0, seed: int = 0) -> np.ndarray:
    """Leiden clusters of log-normalised expression (PCA 30 -> kNN 15), as strings."""
    import scanpy as sc

    tmp = AnnData(X.astype(np.float32))
    sc.pp.pca(tmp, n_comps=min(30, min(tmp.shape) - 1), random_state=seed)
    sc.pp.neighbors(tmp, n_neighbors=15, random_state=seed)
    sc.tl.leiden(
        tmp,
        resolution=resolution,
        random_state=seed,
        flavor="igraph",
        n_iterations=2,
        directed=False,
    )
    return tmp.obs["leiden"].astype(str).to_numpy()


@dataclass
class AnnotationInputs:
    """Expression, groups and candidates of one annotation run, and its provenance so far."""

    X: object
    names: list[str]
    species: str
    ontology: object
    candidate_ids: list[str]
    groupby: str | None
    groups: np.ndarray | None
    params: dict


def prepare_inputs(
    adata: AnnData,
    *,
    method: str,
    candidates: object,
    groupby: str | None,
    layer: str | None,
    use_raw: bool,
    species: str,
    tissue: str | None,
) -> AnnotationInputs:
    """Validate the shared options, read the expression and choose the candidates.

    A branch, list or known tissue is resolved (and refused) before any clustering;
    ``candidates="auto"`` without a known tissue lets the clusters vote.
    """
    from ...knowledge import CellOntology

    check_adata(adata)
    if groupby not in (None, "auto") and groupby not in adata.obs:
        msg = (
            f"groupby={groupby!r} is not a column of adata.obs; "
            f"use one of {list(adata.obs)} or 'auto'."
        )
        raise KbfmInputError(msg)
    species = resolve_species(species, adata.raw.var_names if use_raw else adata.var_names)
    expr = log_expression(adata, layer=layer, use_raw=use_raw)
    X, names = expr.X, expr.names
    ontology = CellOntology.load()
    choice = None
    if not needs_data(candidates, tissue):
        choice = resolve_candidates(candidates, ontology, species, tissue=tissue)
    groups = None
    if groupby == "auto":
        groups = auto_clusters(X)
    elif groupby is not None:
        groups = adata.obs[groupby].astype(str).to_numpy()
    if choice is None:
        votes = groups if groups is not None else auto_clusters(X)
        choice = resolve_candidates(
            candidates, ontology, species, tissue=tissue, X=X, gene_names=names, groups=votes
        )
    logger.info("annotate: %d candidate cell types (%s)", len(choice.ids), choice.how)
    params: dict = {
        "method": method,
        "n_candidates": len(choice.ids),
        "candidates_how": choice.how,
        "candidate_lineages": choice.lineages,
        "groupby": groupby,
        "species": species,
        "expression": expr.where,
    }
    return AnnotationInputs(X, names, species, ontology, choice.ids, groupby, groups, params)


def _group_mean(values: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniq, inverse = np.unique(groups, return_inverse=True)
    sums = np.zeros((len(uniq), values.shape[1]), dtype=np.float64)
    np.add.at(sums, inverse, values)
    counts = np.bincount(inverse, minlength=len(uniq))[:, None]
    return sums / counts, inverse


def write_scores(
    adata: AnnData,
    scores: np.ndarray,
    label_ids: list[str],
    inputs: AnnotationInputs,
    *,
    key_added: str,
    copy: bool,
) -> AnnData | None:
    """Pick the best candidate per cell (or group mean) and write labels and scores."""
    ontology, groups = inputs.ontology, inputs.groups
    if groups is not None:
        group_scores, inverse = _group_mean(scores, groups)
        scores = group_scores[inverse]
    best = np.argmax(scores, axis=1)
    labels = [ontology.term(i).label for i in label_ids]
    adata = adata.copy() if copy else adata
    if inputs.groupby == "auto":
        adata.obs[AUTO_CLUSTER_KEY] = pd.Categorical(groups)
    adata.obs[key_added] = pd.Categorical([labels[b] for b in best])
    adata.obs[f"{key_added}_id"] = pd.Categorical([label_ids[b] for b in best])
    adata.obs[f"{key_added}_score"] = scores[np.arange(len(best)), best].astype(np.float32)
    adata.obsm[f"{key_added}_scores"] = pd.DataFrame(
        scores.astype(np.float32), index=adata.obs_names, columns=labels
    )
    params = inputs.params
    params["candidates"] = list(label_ids)
    params["ontology_version"] = ontology.version
    record_step(adata, "annotate", key_added=key_added, **params)
    return adata if copy else None
