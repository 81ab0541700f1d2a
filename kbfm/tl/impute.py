"""``kbfm.tl.impute``: predict genes, measured or not, from a trained FusionModel."""

from __future__ import annotations

from anndata import AnnData

from .._keys import IMPUTED_KEY
from .._provenance import record_step


def impute(adata: AnnData, model, *, genes: list[str], key_added: str = IMPUTED_KEY) -> None:
    """Predict expression of ``genes`` for every spot.

    Genes of the model's panel are decoded with their learned weights and returned as
    log-normalised values. Genes outside the panel that have knowledge text are decoded
    through their text embedding only (the Geneverse idea) and returned as z-scores
    (their scale was never observed). Genes with neither are refused by name. The
    values come from :meth:`kbfm.models.FusionModel.impute`; this function stores them
    with provenance.

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

    Examples
    --------
    >>> kbfm.tl.impute(adata, model, genes=["CD3E", "FOXP3"])  # doctest: +SKIP
    >>> adata.obsm["kbfm_imputed"]["FOXP3"]  # doctest: +SKIP
    """
    table = model.impute(genes)
    panel = set(model.config.genes)
    adata.obsm[key_added] = table.set_axis(adata.obs_names)
    record_step(
        adata,
        "impute",
        key_added=key_added,
        measured_panel=[g for g in genes if g in panel],
        predicted_from_knowledge=[g for g in genes if g not in panel],
        units="log-normalised for panel genes; z-scores for knowledge-only genes",
    )
