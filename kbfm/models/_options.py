"""FusionModel's model options: preset, encoder, objectives, gene knowledge for the decoder."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from anndata import AnnData

from .._errors import KbfmInputError, preview

ENCODERS = ("mlp", "gcn")  # expression encoders of kbfm.models._module
OBJECTIVES = ("reconstruction", "contrastive", "neighbour")
KNOWLEDGE_WARN_FRACTION = 0.2


def check_preset(preset: str, presets) -> None:
    """Refuse a preset name not in ``presets``, listing the valid ones."""
    if preset not in presets:
        msg = f"Unknown preset {preset!r}; choose from {sorted(presets)}."
        raise KbfmInputError(msg)


def check_encoder(encoder: str) -> None:
    """Refuse an expression encoder other than those of :data:`ENCODERS`."""
    if encoder not in ENCODERS:
        msg = f"encoder must be one of {list(ENCODERS)}, got {encoder!r}."
        raise KbfmInputError(msg)


def objective_weights(objectives: Sequence[str] | Mapping[str, float] | None) -> dict:
    """Weight of each objective from the ``objectives=`` argument of :class:`FusionModel`.

    ``None``: every objective with weight 1; a list of names: those with weight 1; a
    mapping: the weights given. Objectives not named get 0 (off).
    """
    if objectives is None:
        return dict.fromkeys(OBJECTIVES, 1.0)
    if isinstance(objectives, str):
        objectives = [objectives]
    given = dict(objectives) if isinstance(objectives, Mapping) else dict.fromkeys(objectives, 1.0)
    unknown = [k for k in given if k not in OBJECTIVES]
    if unknown:
        msg = f"Unknown objectives {preview(unknown)}; choose from {list(OBJECTIVES)}."
        raise KbfmInputError(msg)
    for name, w in given.items():
        if isinstance(w, bool) or not isinstance(w, int | float) or not w >= 0:
            msg = f"objectives[{name!r}] must be a number >= 0, got {w!r}."
            raise KbfmInputError(msg)
    return {k: given.get(k, 0.0) for k in OBJECTIVES}


def check_neighbour_objective(adata: AnnData, w_neighbour: float) -> None:
    if w_neighbour > 0 and "spatial" not in adata.obsm:
        msg = (
            "w_neighbour > 0 needs obsm['spatial'] (spot coordinates); add it or set w_neighbour=0."
        )
        raise KbfmInputError(msg)


def gene_text_matrix(genes: list[str], source, encoder, species) -> np.ndarray:
    from ..knowledge._gene_vectors import gene_vectors

    try:
        return gene_vectors(genes, source=source, encoder=encoder, species=species).matrix
    except KbfmInputError as err:
        import logging

        from ..encoders import get_text_encoder

        logging.getLogger("kbfm").warning(
            "No gene-text knowledge for the model's genes (%s); the decoder will use its "
            "per-gene weights only and cannot impute unmeasured genes.",
            str(err)[:200],
        )

        return np.zeros((len(genes), get_text_encoder(encoder).dim), dtype=np.float32)


def describe_data(adata: AnnData) -> dict:
    """What the model was trained on, for provenance (no data, only a fingerprint)."""
    import hashlib

    names = "\n".join(map(str, adata.obs_names)).encode()
    return {
        "n_spots": int(adata.n_obs),
        "n_genes": int(adata.n_vars),
        "library_ids": sorted(map(str, adata.uns.get("spatial", {}) or {})),
        "obs_names_sha256": hashlib.sha256(names).hexdigest()[:16],
        "filename": str(adata.filename) if adata.isbacked else None,
    }


def warn_when_knowledge_is_thin(gene_text: np.ndarray, source) -> None:
    """Say so when few of the model's genes carry gene text (the knowledge view is idle)."""
    import logging

    with_text = int((np.abs(gene_text).sum(1) > 0).sum())
    if with_text and with_text < KNOWLEDGE_WARN_FRACTION * len(gene_text):
        logging.getLogger("kbfm").warning(
            "Only %d of the model's %d genes (%.0f%%) carry gene text in knowledge source "
            "%r, so the knowledge-conditioned decoder rests on few genes; "
            "knowledge_source='atlas' has a card for every gene.",
            with_text,
            len(gene_text),
            100 * with_text / len(gene_text),
            str(source),
        )
