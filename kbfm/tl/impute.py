"""``kbfm.tl.impute``: predict genes, measured or not, from a trained FusionModel."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from .._errors import KbfmInputError, preview
from .._provenance import record_step

IMPUTED_KEY = "kbfm_imputed"


def impute(adata: AnnData, model, *, genes: list[str], key_added: str = IMPUTED_KEY) -> None:
    """Predict expression of ``genes`` for every spot.

    Genes of the model's panel are decoded with their learned weights and returned as
    log-normalised values. Genes outside the panel that have knowledge text are decoded
    through their text embedding only (the Geneverse idea) and returned as z-scores
    (their scale was never observed). Genes with neither are refused by name.

    Parameters
    ----------
    adata
        The data the model was set up or loaded on.
    model
        A trained :class:`kbfm.models.FusionModel`.
    genes
        Genes to predict.
    key_added
        ``obsm`` key receiving a DataFrame (spots x genes);
        ``uns["kbfm"]["impute"]`` records which genes were measured vs predicted.
    """
    import torch

    from ..knowledge._gene_vectors import gene_vectors

    if not genes:
        msg = "genes must list at least one gene."
        raise KbfmInputError(msg)
    model._require_trained()
    cfg = model.config
    panel = {g: i for i, g in enumerate(cfg.genes)}
    in_panel = [g for g in genes if g in panel]
    outside = [g for g in genes if g not in panel]
    latent = torch.from_numpy(model.get_latent_representation())
    module = model.module.cpu().eval()
    columns: dict[str, np.ndarray] = {}
    with torch.inference_mode():
        if in_panel:
            idx = torch.tensor([panel[g] for g in in_panel])
            w, b = module.gene_weights(module.gene_text)
            z = (latent @ w[idx].T + b[idx]).numpy()
            mean, std = (
                np.asarray(cfg.gene_mean)[idx.numpy()],
                np.asarray(cfg.gene_std)[idx.numpy()],
            )
            for j, g in enumerate(in_panel):
                columns[g] = z[:, j] * std[j] + mean[j]
        predicted = []
        if outside:
            gv = gene_vectors(
                outside, source=cfg.knowledge_source, encoder=cfg.text_encoder, species=cfg.species
            )
            unknown = [g for g, ok in zip(outside, gv.has_knowledge, strict=True) if not ok]
            if unknown:
                msg = f"No knowledge text for {preview(unknown)}; they cannot be imputed."
                raise KbfmInputError(msg)
            w, b = module.gene_weights(torch.from_numpy(gv.matrix), residual=False)
            z = (latent @ w.T + b).numpy()
            for j, g in enumerate(outside):
                columns[g] = z[:, j]
                predicted.append(g)
    adata.obsm[key_added] = pd.DataFrame({g: columns[g] for g in genes}, index=adata.obs_names)
    record_step(
        adata,
        "impute",
        key_added=key_added,
        measured_panel=in_panel,
        predicted_from_knowledge=predicted,
        units="log-normalised for panel genes; z-scores for knowledge-only genes",
    )
