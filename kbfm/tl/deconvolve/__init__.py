"""``kbfm.tl.deconvolve``: cell-type proportions per spot.

One function per method, each with only its own options: :func:`deconvolve_nnls`
(the baseline), :func:`deconvolve_poisson` (a count model) and
:func:`deconvolve_knowledge` (knowledge-aware, or zero-shot without a reference).
:func:`deconvolve` chooses one by ``method=`` and refuses the options of the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from anndata import AnnData

from ...knowledge.gene_descriptions import DEFAULT_GENE_KNOWLEDGE
from .._method_options import (
    call_with_its_options,
    check_method,
    keyword_defaults,
    reject_foreign_options,
)
from ._result import PROPORTIONS_KEY
from .knowledge import deconvolve_knowledge
from .nnls import deconvolve_nnls
from .poisson import CountModelOptions, deconvolve_poisson

__all__ = [
    "METHODS",
    "METHOD_OPTIONS",
    "PROPORTIONS_KEY",
    "CountModelOptions",
    "check_method_options",
    "deconvolve",
    "deconvolve_knowledge",
    "deconvolve_nnls",
    "deconvolve_poisson",
]

METHODS = ("nnls", "poisson", "knowledge")
_FUNCTIONS = {
    "nnls": deconvolve_nnls,
    "poisson": deconvolve_poisson,
    "knowledge": deconvolve_knowledge,
}
_COUNT_MODEL = ("likelihood", "n_epochs", "lr", "gamma_sd", "seed")
#: Options only some methods use; every other option of :func:`deconvolve` is shared.
METHOD_OPTIONS: dict[str, tuple[str, ...]] = {
    "nnls": (),
    "poisson": _COUNT_MODEL,
    "knowledge": (
        *_COUNT_MODEL,
        "cell_types",
        "markers",
        "knowledge_source",
        "encoder",
        "smoothing",
        "n_neighbors",
    ),
}


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
    key_added: str = PROPORTIONS_KEY,
    copy: bool = False,
) -> AnnData | None:
    """Estimate cell-type proportions in each spot.

    Calls the function of ``method`` with the options it takes:

    ``"nnls"``: :func:`~kbfm.tl.deconvolve_nnls`
        Non-negative least squares of each spot's counts on the reference signatures
        (mean counts per cell of each type) over informative genes: the baseline.
    ``"poisson"``: :func:`~kbfm.tl.deconvolve_poisson`
        A negative-binomial (or Poisson) model fitted with PyTorch, in the spirit of
        RCTD / cell2location: ``mu = s_spot * exp(gamma_gene) * proportions @ signatures``
        with a per-spot scale and gene-specific platform effects (see
        :mod:`kbfm.tl.deconvolve.poisson`); started from the NNLS solution.
    ``"knowledge"``: :func:`~kbfm.tl.deconvolve_knowledge`
        The count model on signatures where genes poorly measured in the reference
        borrow their cell-type profile from genes with similar text descriptions
        (text-embedding neighbours). With ``reference=None`` it runs zero-shot: signatures
        come from the marker genes of ``cell_types`` (Cell Ontology terms, markers from
        :mod:`kbfm.knowledge` or ``markers=``).

    An option of another method set away from its default is refused, before any work.
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
        ``method="knowledge"``, zero-shot: the cell types to look for.
    markers
        ``method="knowledge"``, zero-shot: ``{cell type: [marker genes]}`` instead of
        kbfm.knowledge markers.
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
        ``"poisson"`` and ``"knowledge"``: ``"nb"`` or ``"poisson"`` for the count model.
    n_epochs, lr, gamma_sd
        ``"poisson"`` and ``"knowledge"``: Adam steps, learning rate, prior sd of the log
        platform effects.
    knowledge_source, encoder
        ``method="knowledge"``: gene knowledge and text encoder.
    smoothing, n_neighbors
        ``method="knowledge"``: signature smoothing strength (reference counts at which
        a gene keeps half of its own profile) and number of text neighbours.
    seed
        ``"poisson"`` and ``"knowledge"``: random seed of the count model.
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

    Raises
    ------
    KbfmInputError
        For an unknown ``method`` or an option of another method (e.g.
        ``method="nnls", n_epochs=200``).

    Examples
    --------
    >>> import kbfm
    >>> kbfm.tl.deconvolve(spots, reference=cells, label_key="cell_type")  # doctest: +SKIP
    >>> spots.obsm["kbfm_proportions"].head()  # doctest: +SKIP
    """
    options = dict(locals())
    del options["adata"], options["method"]
    check_method_options(method, **options)
    return call_with_its_options(_FUNCTIONS[method], adata, options)


_DEFAULTS = keyword_defaults(deconvolve)


def check_method_options(method: str, **options: object) -> None:
    """Refuse an unknown method, or options (keyword: value) of another method.

    Options left at :func:`deconvolve`'s default pass; so do the shared ones. The CLI
    calls this before reading any file.

    Parameters
    ----------
    method
        ``"nnls"``, ``"poisson"`` or ``"knowledge"``.
    **options
        Options of :func:`deconvolve` as the caller set them.

    Raises
    ------
    KbfmInputError
        Naming the method's choices, or each foreign option and the method it belongs to.

    Examples
    --------
    >>> from kbfm.tl.deconvolve import check_method_options
    >>> check_method_options("nnls", layer="counts")
    >>> check_method_options("nnls", n_epochs=200)  # doctest: +SKIP
    KbfmInputError: deconvolve(method='nnls') does not use n_epochs=200 ...
    """
    check_method("deconvolve", method, METHODS)
    reject_foreign_options("deconvolve", method, options, defaults=_DEFAULTS, owners=METHOD_OPTIONS)
