"""Cell-type proportions per spot: NNLS, a count model, and a knowledge-aware variant."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._errors import KbfmInputError, closest_names
from .._provenance import record_step
from .._settings import settings
from .._validate import check_adata
from ..knowledge.gene_descriptions import DEFAULT_GENE_KNOWLEDGE
from ._deconv_inputs import (
    check_labels,
    counts_matrix,
    informative_genes,
    match_genes,
    type_means,
)

logger = logging.getLogger(__name__)

METHODS = ("nnls", "poisson", "knowledge")


def _dense(X) -> np.ndarray:
    return X.toarray().astype(float) if sp.issparse(X) else np.asarray(X, dtype=float)


def _knowledge_signatures(
    R, S_shared, names, sel, *, knowledge_source, encoder, species, smoothing, n_neighbors, n_pool
):
    """Smooth the signatures of the selected genes with text neighbours from a gene pool."""
    from ..knowledge._gene_vectors import gene_vectors
    from ._deconv_knowledge import smooth_signatures

    reliability = np.asarray(R.sum(axis=0)).ravel()
    # A gene borrows weight smoothing / (smoothing + counts) from its text neighbours;
    # when that is under 5% for every selected gene, smoothing would change nothing:
    # skip the text embedding (up to half the run time) and say so.
    weight = smoothing / (smoothing + reliability[sel])
    if not (weight > 0.05).any():
        logger.info(
            "method='knowledge': every one of the %d genes has at least %.0f reference "
            "counts, so text smoothing would change nothing; it was skipped (the result "
            "equals method='poisson').",
            len(sel),
            float(reliability[sel].min()),
        )
        report = {
            "skipped": True,
            "reason": "every gene has enough reference counts (weight on neighbours < 0.05)",
            "n_genes": len(sel),
            "min_reference_counts": float(reliability[sel].min()),
        }
        return S_shared[:, sel], report
    top = np.argsort(-reliability)[:n_pool]
    pool = np.array(sorted(set(sel.tolist()) | set(top.tolist())), dtype=int)
    vectors = gene_vectors(
        [names[i] for i in pool], source=knowledge_source, encoder=encoder, species=species
    )
    smoothed, report = smooth_signatures(
        S_shared[:, pool],
        reliability[pool],
        vectors.matrix,
        np.asarray(vectors.has_knowledge, dtype=bool),
        smoothing=smoothing,
        n_neighbors=n_neighbors,
    )
    where = {g: j for j, g in enumerate(pool)}
    report["knowledge"] = vectors.provenance
    return smoothed[:, [where[g] for g in sel]], report


def deconvolve(
    adata: AnnData,
    reference: AnnData | None = None,
    *,
    label_key: str = "cell_type",
    method: str = "poisson",
    cell_types: Sequence[str] | None = None,
    markers: Mapping[str, Sequence[str]] | None = None,
    layer: str | None = None,
    reference_layer: str | None = None,
    species: str = "auto",
    reference_species: str = "auto",
    genes: Sequence[str] | None = None,
    n_genes_per_type: int = 100,
    min_cells_per_type: int = 2,
    likelihood: str = "nb",
    n_epochs: int = 1000,
    lr: float = 0.05,
    gamma_sd: float = 0.5,
    knowledge_source: object = DEFAULT_GENE_KNOWLEDGE,
    encoder: str = "minilm",
    smoothing: float = 20.0,
    n_neighbors: int = 10,
    seed: int = 0,
    key_added: str = "kbfm_proportions",
    copy: bool = False,
) -> AnnData | None:
    """Estimate cell-type proportions in each spot.

    Methods:

    ``"nnls"``
        Non-negative least squares of each spot's counts on the reference signatures
        (mean counts per cell of each type) over informative genes: the baseline.
    ``"poisson"``
        A negative-binomial (or Poisson) model fitted with PyTorch, in the spirit of
        RCTD / cell2location: ``mu = s_spot * exp(gamma_gene) * proportions @ signatures``
        with a per-spot scale and gene-specific platform effects (see
        :mod:`kbfm.tl._deconv_poisson`); started from the NNLS solution.
    ``"knowledge"``
        The count model on signatures where genes poorly measured in the reference
        borrow their cell-type profile from genes with similar text descriptions
        (text-embedding neighbours). With ``reference=None`` it runs zero-shot: signatures
        come from the marker genes of ``cell_types`` (Cell Ontology terms, markers from
        :mod:`kbfm.knowledge` or ``markers=``).

    Proportions are fractions of cells when the reference holds raw counts (signatures
    keep each type's mRNA content); with a normalised reference they are fractions of RNA.

    Parameters
    ----------
    adata
        Spatial data, spots x genes, raw counts in ``X`` or ``layer``.
    reference
        Labelled single-cell reference (cells x genes); ``None`` for zero-shot.
    label_key
        ``reference.obs`` column with cell-type labels.
    method
        ``"nnls"``, ``"poisson"`` or ``"knowledge"``.
    cell_types
        Zero-shot only: the cell types to look for.
    markers
        Zero-shot only: ``{cell type: [marker genes]}`` instead of kbfm.knowledge markers.
    layer, reference_layer
        Layers with raw counts.
    species, reference_species
        ``"human"``, ``"mouse"`` or ``"auto"`` (from the symbols); when they differ, genes
        are mapped through orthologs.
    genes
        Use exactly these genes instead of the informative genes of the reference.
    n_genes_per_type
        Informative genes picked per cell type.
    min_cells_per_type
        Refuse reference types with fewer cells.
    likelihood
        ``"nb"`` or ``"poisson"`` for the count model.
    n_epochs, lr, gamma_sd
        Count model: Adam steps, learning rate, prior sd of the log platform effects.
    knowledge_source, encoder
        Gene knowledge and text encoder for ``method="knowledge"``.
    smoothing, n_neighbors
        Signature smoothing strength (reference counts at which a gene keeps half of its
        own profile) and number of text neighbours.
    seed
        Random seed.
    key_added
        ``obsm`` key of the proportions.
    copy
        Work on a copy and return it.

    Returns
    -------
    ``None`` (or a copy). Writes ``obsm[key_added]``: DataFrame spots x cell types (rows
    sum to 1); ``var[f"{key_added}_used"]`` (genes used) and for count models
    ``var[f"{key_added}_platform_effect"]`` (log scale, NaN for unused genes); parameters,
    gene matching report and genes used in ``uns["kbfm"]["deconvolve"]``.

    Examples
    --------
    >>> import kbfm
    >>> kbfm.tl.deconvolve(spots, reference=cells, label_key="cell_type")  # doctest: +SKIP
    >>> spots.obsm["kbfm_proportions"].head()  # doctest: +SKIP
    """
    check_adata(adata)
    if method not in METHODS:
        msg = f"method must be one of {list(METHODS)}, got {method!r}." + closest_names(
            method, METHODS
        )
        raise KbfmInputError(msg)
    if likelihood not in ("nb", "poisson"):
        msg = f"likelihood must be 'nb' or 'poisson', got {likelihood!r}."
        raise KbfmInputError(msg)
    if reference is None and method != "knowledge":
        msg = (
            f"method={method!r} needs reference= (a labelled single-cell AnnData). Without "
            "a reference use method='knowledge' with cell_types=[...] (zero-shot)."
        )
        raise KbfmInputError(msg)
    need_counts = method != "nnls"
    Y_all, sp_names, sp_kind = counts_matrix(
        adata, layer=layer, what="spatial", need_counts=need_counts
    )
    device = settings.resolve_device()
    params = {
        "method": method,
        "label_key": label_key,
        "likelihood": likelihood,
        "n_epochs": n_epochs,
        "lr": lr,
        "gamma_sd": gamma_sd,
        "seed": seed,
        "spatial_layer": layer,
        "spatial_scale": sp_kind,
    }
    fit = None
    if reference is None:
        from ..pp._detect import guess_species
        from ._deconv_knowledge import marker_signatures, resolve_cell_types
        from ._deconv_poisson import fit_count_model

        sp_species = guess_species(sp_names) if species == "auto" else species
        labels, by_label, prov = resolve_cell_types(
            cell_types or [], species=sp_species, markers=markers, gene_names=sp_names
        )
        S, gene_idx, report = marker_signatures(sp_names, by_label)
        Y = _dense(Y_all[:, gene_idx])
        fit = fit_count_model(
            Y,
            S,
            likelihood=likelihood,
            gamma_sd=max(gamma_sd, 3.0),
            n_epochs=n_epochs,
            lr=lr,
            seed=seed,
            device=device,
        )
        P, types, used_idx = fit.proportions, labels, gene_idx
        params.update(mode="zero-shot", species=sp_species, **prov, **report)
    else:
        check_adata(reference)
        labels_ref = check_labels(reference, label_key, min_cells_per_type)
        R, ref_names, ref_kind = counts_matrix(
            reference, layer=reference_layer, what="reference", need_counts=False
        )
        match = match_genes(
            sp_names, ref_names, species=species, reference_species=reference_species
        )
        R = (
            sp.csr_matrix(R)[:, match.reference_idx]
            if sp.issparse(R)
            else R[:, match.reference_idx]
        )
        shared = match.names
        if genes is not None:
            pos = {g: i for i, g in enumerate(shared)}
            missing = [g for g in genes if g not in pos]
            if missing:
                msg = f"{len(missing)} genes in genes= are not shared: {missing[:5]}."
                raise KbfmInputError(msg)
            sel = np.array([pos[g] for g in genes], dtype=int)
        else:
            sel = informative_genes(R, labels_ref, n_per_type=n_genes_per_type)
            if len(sel) < 10:
                logger.warning(
                    "Only %d informative genes; using all %d shared.", len(sel), len(shared)
                )
                sel = np.arange(len(shared))
        S_shared, types, n_cells = type_means(R, labels_ref)
        sel = sel[S_shared[:, sel].sum(axis=0) > 0]
        S = S_shared[:, sel]
        Y = _dense(Y_all[:, match.spatial_idx[sel]])
        used_idx = match.spatial_idx[sel]
        params.update(
            mode="reference",
            reference_scale=ref_kind,
            reference_layer=reference_layer,
            cells_per_type=dict(zip(types, n_cells.astype(int).tolist(), strict=True)),
            gene_match=match.summary(),
            n_genes_spatial=len(sp_names),
            n_genes_reference=len(ref_names),
        )
        from ._deconv_nnls import nnls_proportions

        if method == "knowledge":
            S, smooth_report = _knowledge_signatures(
                R,
                S_shared,
                shared,
                sel,
                knowledge_source=knowledge_source,
                encoder=encoder,
                species=match.species,
                smoothing=smoothing,
                n_neighbors=n_neighbors,
                n_pool=2000,
            )
            params.update(
                smoothing=smoothing,
                n_neighbors=n_neighbors,
                encoder=encoder,
                signature_smoothing=smooth_report,
            )
        P, _ = nnls_proportions(Y, S)
        if method in ("poisson", "knowledge"):
            from ._deconv_poisson import fit_count_model

            fit = fit_count_model(
                Y,
                S,
                init=P,
                likelihood=likelihood,
                gamma_sd=gamma_sd,
                n_epochs=n_epochs,
                lr=lr,
                seed=seed,
                device=device,
            )
            P = fit.proportions

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
        genes_used=[str(sp_names[i]) for i in used_idx],
        n_empty_spots=empty,
        key_added=key_added,
    )
    logger.info("deconvolve: %s, %d types, %d genes", method, len(types), len(used_idx))
    record_step(adata, "deconvolve", **params)
    return adata if copy else None
