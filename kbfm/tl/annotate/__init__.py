"""``kbfm.tl.annotate``: cell-type annotation against the Cell Ontology.

One function per method, each with only its own options: :func:`annotate_zero_shot`,
:func:`annotate_marker_score` and :func:`annotate_llm`. :func:`annotate` chooses one by
``method=`` and refuses the options of the others.
"""

from __future__ import annotations

from typing import Literal

from anndata import AnnData

from ..._keys import AUTO_CLUSTER_KEY, CELLTYPE_KEY
from ...encoders import DEFAULT_TEXT_ENCODER, TextEncoder
from ...knowledge.gene_descriptions import DEFAULT_GENE_KNOWLEDGE
from .._method_options import (
    call_with_its_options,
    check_method,
    keyword_defaults,
    reject_foreign_options,
)
from ._inputs import auto_clusters
from .llm import annotate_llm
from .marker_score import annotate_marker_score
from .zero_shot import annotate_zero_shot

__all__ = [
    "AUTO_CLUSTER_KEY",
    "CELLTYPE_KEY",
    "METHODS",
    "METHOD_OPTIONS",
    "annotate",
    "annotate_llm",
    "annotate_marker_score",
    "annotate_zero_shot",
    "auto_clusters",
    "check_method_options",
]

METHODS = ("zero_shot", "marker_score", "llm")
_FUNCTIONS = {
    "zero_shot": annotate_zero_shot,
    "marker_score": annotate_marker_score,
    "llm": annotate_llm,
}
#: Options only some methods use; every other option of :func:`annotate` is shared.
METHOD_OPTIONS: dict[str, tuple[str, ...]] = {
    "zero_shot": (
        "source",
        "encoder",
        "prototype",
        "markers_in_card",
        "weighting",
        "center",
        "cache",
    ),
    "marker_score": (),
    "llm": ("llm", "llm_options", "constrained", "top_n", "retrieval", "cache"),
}


def annotate(
    adata: AnnData,
    *,
    method: Literal["zero_shot", "marker_score", "llm"] = "zero_shot",
    candidates: object = "auto",
    groupby: str | None = None,
    layer: str | None = None,
    use_raw: bool = False,
    source: object = DEFAULT_GENE_KNOWLEDGE,
    encoder: str | TextEncoder = DEFAULT_TEXT_ENCODER,
    species: str = "auto",
    prototype: str = "card+markers",
    markers_in_card: bool = True,
    weighting: Literal["expression", "relative"] = "relative",
    center: bool | None = None,
    llm: object = "smollm2",
    llm_options: dict | None = None,
    tissue: str | None = None,
    constrained: bool | None = None,
    top_n: int = 10,
    retrieval: bool = True,
    key_added: str = CELLTYPE_KEY,
    cache: bool = True,
    copy: bool = False,
) -> AnnData | None:
    """Annotate cells (or clusters) with Cell Ontology cell types, without a reference.

    Calls the function of ``method`` with the options it takes:
    ``"zero_shot"`` :func:`~kbfm.tl.annotate_zero_shot` (GenePT-w cells against
    Cell Ontology prototypes in text space), ``"marker_score"``
    :func:`~kbfm.tl.annotate_marker_score` (``scanpy.tl.score_genes`` on curated
    markers, the classic baseline) or ``"llm"`` :func:`~kbfm.tl.annotate_llm` (an LLM
    names each group from its top markers; ``llm="dry-run"`` only records the prompts).
    An option of another method set away from its default is refused, before any work.

    Parameters
    ----------
    adata
        Non-negative log-normalised expression (or counts) in ``X``, a layer or ``raw``.
    method
        ``"zero_shot"``, ``"marker_score"`` or ``"llm"``.
    candidates, groupby, layer, use_raw, species, tissue
        Every method: which cell types may be chosen, the groups to annotate
        (``method="llm"`` always annotates groups: ``None`` means ``"auto"`` there),
        where to read expression, the species and the tissue (chooses the
        ``candidates="auto"`` lineages; named in the LLM prompt). See
        :func:`~kbfm.tl.annotate_zero_shot`.
    source, encoder, prototype, markers_in_card, weighting, center
        ``method="zero_shot"`` only: see :func:`~kbfm.tl.annotate_zero_shot`.
    llm, llm_options, constrained, top_n, retrieval
        ``method="llm"`` only: see :func:`~kbfm.tl.annotate_llm`.
    key_added
        Prefix of the ``obs`` keys written.
    cache
        ``zero_shot`` and ``llm``: use the embedding / answer cache.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the copy when ``copy=True``. Writes ``obs[key_added]`` (label),
    ``obs[key_added + "_id"]`` (CL id), ``obs[key_added + "_score"]`` (cosine, marker
    score or LLM confidence of the winner), for ``zero_shot`` and ``marker_score``
    ``obsm[key_added + "_scores"]`` (all candidates), and ``uns["kbfm"]["annotate"]``.

    Raises
    ------
    KbfmInputError
        For an unknown ``method`` or an option of another method (e.g.
        ``method="marker_score", llm="openai:gpt-4"``).

    Examples
    --------
    >>> import scanpy as sc, kbfm
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> kbfm.tl.annotate(adata, use_raw=True, candidates="hematopoietic cell", groupby="auto")
    >>> adata.obs["kbfm_celltype"].value_counts().index[0]  # doctest: +SKIP
    'CD14-positive monocyte'
    """
    options = dict(locals())
    del options["adata"], options["method"]
    check_method_options(method, **options)
    return call_with_its_options(_FUNCTIONS[method], adata, options)


_DEFAULTS = keyword_defaults(annotate)


def check_method_options(method: str, **options: object) -> None:
    """Refuse an unknown method, or options (keyword: value) of another method.

    Options left at :func:`annotate`'s default pass; so do the shared ones. The CLI calls
    this before reading any file.

    Parameters
    ----------
    method
        ``"zero_shot"``, ``"marker_score"`` or ``"llm"``.
    **options
        Options of :func:`annotate` as the caller set them.

    Raises
    ------
    KbfmInputError
        Naming the method's choices, or each foreign option and the method it belongs to.

    Examples
    --------
    >>> from kbfm.tl.annotate import check_method_options
    >>> check_method_options("marker_score", tissue="brain")
    >>> check_method_options("marker_score", llm="openai:gpt-4")  # doctest: +SKIP
    KbfmInputError: annotate(method='marker_score') does not use llm='openai:gpt-4' ...
    """
    check_method("annotate", method, METHODS)
    reject_foreign_options("annotate", method, options, defaults=_DEFAULTS, owners=METHOD_OPTIONS)
