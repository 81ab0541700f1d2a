"""Decode genes from a trained FusionModel: panel genes and genes known only from text."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._errors import KbfmInputError, preview


def impute_genes(model, genes: list[str]) -> pd.DataFrame:
    """Predicted expression of ``genes`` for every spot of ``model.adata`` (see ``impute``).

    Parameters
    ----------
    model
        A trained :class:`kbfm.models.FusionModel`.
    genes
        Genes to predict; the model's panel genes come back log-normalised, others
        (decoded from their knowledge text only) as z-scores.

    Returns
    -------
    Spots x genes, indexed by ``model.adata.obs_names``, one column per distinct gene in
    the order given.
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
    return pd.DataFrame({g: columns[g] for g in genes}, index=model.adata.obs_names)
