"""Write the proportions of any deconvolution method into the spots' AnnData."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from anndata import AnnData

from ..._provenance import record_step

logger = logging.getLogger(__name__)

PROPORTIONS_KEY = "kbfm_proportions"


def write_proportions(
    adata: AnnData,
    P: np.ndarray,
    *,
    types: list[str],
    used_idx: np.ndarray,
    Y: np.ndarray,
    spatial_names: list[str],
    fit,
    params: dict,
    key_added: str,
    copy: bool,
) -> AnnData | None:
    """Write ``obsm[key_added]``, the genes used, platform effects and provenance.

    ``fit`` is the count model's :class:`~kbfm.tl.deconvolve.poisson.CountFit`, or
    ``None`` for NNLS (no platform effects then).
    """
    adata = adata.copy() if copy else adata
    empty = int((Y.sum(axis=1) == 0).sum())
    if empty:
        logger.warning(
            "%d spots have no counts on the genes used; their proportions are uniform.", empty
        )
    adata.obsm[key_added] = pd.DataFrame(P, index=adata.obs_names, columns=[str(t) for t in types])
    used = np.zeros(adata.n_vars, dtype=bool)
    used[used_idx] = True
    adata.var[f"{key_added}_used"] = used
    if fit is not None:
        effect = np.full(adata.n_vars, np.nan)
        effect[used_idx] = fit.platform_effect
        adata.var[f"{key_added}_platform_effect"] = effect
        params["final_loss"] = fit.loss[-1]
    params.update(
        cell_types=[str(t) for t in types],
        n_genes_used=len(used_idx),
        genes_used=[str(spatial_names[i]) for i in used_idx],
        n_empty_spots=empty,
        key_added=key_added,
    )
    logger.info("deconvolve: %s, %d types, %d genes", params["method"], len(types), len(used_idx))
    record_step(adata, "deconvolve", **params)
    return adata if copy else None
