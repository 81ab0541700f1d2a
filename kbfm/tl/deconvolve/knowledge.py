"""Knowledge-aware deconvolution: text-smoothed signatures, or none at all (zero-shot)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict

import numpy as np
from anndata import AnnData

from ..._errors import KbfmInputError
from ..._settings import settings
from ..._validate import check_adata
from ...knowledge.gene_descriptions import DEFAULT_GENE_KNOWLEDGE
from .._method_options import is_default, keyword_defaults
from ._inputs import counts_matrix
from ._reference import ReferenceOptions, dense, reference_signatures
from ._result import PROPORTIONS_KEY, write_proportions
from .nnls import nnls_proportions
from .poisson import CountModelOptions

logger = logging.getLogger(__name__)

#: Genes with the most reference counts that join the selected genes as text neighbours.
NEIGHBOUR_POOL = 2000


def _knowledge_signatures(
    R, S_shared, names, sel, *, knowledge_source, encoder, species, smoothing, n_neighbors, n_pool
):
    """Smooth the signatures of the selected genes with text neighbours from a gene pool."""
    from ...knowledge._gene_vectors import gene_vectors
    from ._signatures import smooth_signatures

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


#: Options only the reference mode uses, in the order a refusal names them.
REFERENCE_ONLY = (
    "label_key",
    "reference_layer",
    "reference_species",
    "genes",
    "n_genes_per_type",
    "min_cells_per_type",
    "knowledge_source",
    "encoder",
    "smoothing",
    "n_neighbors",
)
#: Options only the zero-shot mode uses.
ZERO_SHOT_ONLY = ("cell_types", "markers")


def _check_mode_options(reference: AnnData | None, options: Mapping[str, object]) -> None:
    """Refuse options of the other mode (zero-shot vs reference) before any work.

    ``options`` maps the names in :data:`REFERENCE_ONLY` and :data:`ZERO_SHOT_ONLY` to the
    values given; an option counts as set when it differs from the function's default.
    """
    if reference is None:
        defaults = keyword_defaults(deconvolve_knowledge)
        unused = [n for n in REFERENCE_ONLY if not is_default(options[n], defaults[n])]
        if unused:
            msg = (
                f"deconvolve_knowledge without a reference (zero-shot) does not use "
                f"{', '.join(unused)}: they only apply with reference=. Pass a reference, "
                "or drop them."
            )
            raise KbfmInputError(msg)
        return
    given = [name for name in ZERO_SHOT_ONLY if options[name]]
    if given:
        msg = (
            f"deconvolve_knowledge with a reference takes its cell types from "
            f"reference.obs[{options['label_key']!r}]; {' and '.join(given)} only apply "
            "zero-shot (reference=None)."
        )
        raise KbfmInputError(msg)


def deconvolve_knowledge(
    adata: AnnData,
    reference: AnnData | None = None,
    *,
    label_key: str = "cell_type",
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
    key_added: str = PROPORTIONS_KEY,
    copy: bool = False,
) -> AnnData | None:
    """Cell-type proportions per spot from the count model with knowledge in the signatures.

    With a reference: the count model of :func:`~kbfm.tl.deconvolve_poisson` on
    signatures where genes poorly measured in the reference borrow their cell-type
    profile from genes with similar text descriptions (text-embedding neighbours).
    With ``reference=None`` it runs zero-shot: signatures come from the marker genes of
    ``cell_types`` (Cell Ontology terms, markers from :mod:`kbfm.knowledge` or
    ``markers=``). ``deconvolve(method="knowledge")`` calls this function.

    Parameters
    ----------
    adata
        Spatial data, spots x genes, raw counts in ``X`` or ``layer``.
    reference
        Labelled single-cell reference (cells x genes); ``None`` for zero-shot.
    label_key
        ``reference.obs`` column with cell-type labels.
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
        Count model: Adam steps, learning rate, prior sd of the log platform effects
        (at least 3 zero-shot, where marker signatures carry no real scale).
    knowledge_source, encoder
        Gene knowledge and text encoder of the smoothing.
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
    sum to 1); ``var[f"{key_added}_used"]`` (genes used) and
    ``var[f"{key_added}_platform_effect"]`` (log scale, NaN for unused genes);
    parameters, gene matching or marker report, smoothing report and genes used in
    ``uns["kbfm"]["deconvolve"]``.

    Examples
    --------
    >>> import kbfm
    >>> kbfm.tl.deconvolve_knowledge(spots, cell_types=["B cell", "T cell"])  # doctest: +SKIP
    >>> spots.obsm["kbfm_proportions"].head()  # doctest: +SKIP
    """
    check_adata(adata)
    options = ReferenceOptions(
        label_key=label_key,
        reference_layer=reference_layer,
        species=species,
        reference_species=reference_species,
        genes=genes,
        n_genes_per_type=n_genes_per_type,
        min_cells_per_type=min_cells_per_type,
    )
    _check_mode_options(
        reference,
        {
            "label_key": label_key,
            "reference_layer": reference_layer,
            "reference_species": reference_species,
            "genes": genes,
            "n_genes_per_type": n_genes_per_type,
            "min_cells_per_type": min_cells_per_type,
            "knowledge_source": knowledge_source,
            "encoder": encoder,
            "smoothing": smoothing,
            "n_neighbors": n_neighbors,
            "cell_types": cell_types,
            "markers": markers,
        },
    )
    model = CountModelOptions(likelihood, n_epochs, lr, gamma_sd, seed)
    Y_all, sp_names, sp_kind = counts_matrix(adata, layer=layer, what="spatial", need_counts=True)
    device = settings.resolve_device()
    params = {
        "method": "knowledge",
        "label_key": label_key,
        **asdict(model),
        "spatial_layer": layer,
        "spatial_scale": sp_kind,
    }
    if reference is None:
        from ...pp._detect import guess_species
        from ._signatures import marker_signatures, resolve_cell_types

        sp_species = guess_species(sp_names) if species == "auto" else species
        labels, by_label, prov = resolve_cell_types(
            cell_types or [], species=sp_species, markers=markers, gene_names=sp_names
        )
        S, used_idx, report = marker_signatures(sp_names, by_label)
        Y = dense(Y_all[:, used_idx])
        fit = model.fit(Y, S, device=device, gamma_sd=max(gamma_sd, 3.0))
        types = labels
        params.update(mode="zero-shot", species=sp_species, **prov, **report)
    else:
        ref = reference_signatures(reference, Y_all, sp_names, options)
        params.update(ref.params)
        S, smooth_report = _knowledge_signatures(
            ref.R,
            ref.S_shared,
            ref.shared,
            ref.sel,
            knowledge_source=knowledge_source,
            encoder=encoder,
            species=ref.species,
            smoothing=smoothing,
            n_neighbors=n_neighbors,
            n_pool=NEIGHBOUR_POOL,
        )
        params.update(
            smoothing=smoothing,
            n_neighbors=n_neighbors,
            encoder=encoder,
            signature_smoothing=smooth_report,
        )
        P, _ = nnls_proportions(ref.Y, S)
        fit = model.fit(ref.Y, S, init=P, device=device)
        Y, types, used_idx = ref.Y, ref.types, ref.used_idx
    return write_proportions(
        adata,
        fit.proportions,
        types=types,
        used_idx=used_idx,
        Y=Y,
        spatial_names=sp_names,
        fit=fit,
        params=params,
        key_added=key_added,
        copy=copy,
    )
