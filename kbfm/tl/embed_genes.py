"""``kbfm.tl.embed_genes``: one text embedding per gene from its knowledge description."""

from __future__ import annotations

from anndata import AnnData

from .._keys import GENE_TEXT_KEY, HAS_KNOWLEDGE_KEY, SYMBOL_KEY
from .._provenance import record_step
from .._validate import check_adata
from ..encoders import DEFAULT_TEXT_ENCODER, TextEncoder
from ..knowledge._gene_vectors import gene_vectors
from ..knowledge.gene_descriptions import DEFAULT_GENE_KNOWLEDGE


def embed_genes(
    adata: AnnData,
    *,
    source: object = DEFAULT_GENE_KNOWLEDGE,
    encoder: str | TextEncoder = DEFAULT_TEXT_ENCODER,
    species: str = "auto",
    key_added: str = GENE_TEXT_KEY,
    cache: bool = True,
    copy: bool = False,
) -> AnnData | None:
    """Embed the knowledge description of every gene in ``adata.var_names``.

    Gene names are normalised first (case, aliases, Ensembl ids, species), then each
    matched gene's description (e.g. "CD3E: CD3 epsilon subunit ... <summary>") is
    embedded by the text encoder, through the on-disk cache.

    Parameters
    ----------
    adata
        Data whose ``var_names`` are gene symbols or Ensembl ids.
    source
        Gene knowledge: ``"atlas"`` (default, offline: a card for every gene, from
        HGNC/Ensembl names, cell-type markers and GO terms when found), ``"builtin"``
        (curated marker genes only), ``"ncbi"`` (after
        ``kbfm knowledge download ncbi``), a GenePT JSON, a TSV/CSV file, or a
        :class:`~kbfm.knowledge.GeneKnowledge`.
    encoder
        Text encoder name (``kbfm info`` lists them) or object.
    species
        ``"human"``, ``"mouse"`` or ``"auto"`` (detected from the gene names). Mouse
        genes use mouse cards; a human-only source (a GenePT file) is reached through
        orthologs, with the match counts in ``uns``.
    key_added
        Key in ``adata.varm``.
    cache
        Use the embedding cache.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the copy when ``copy=True``. Writes

    - ``adata.varm[key_added]``: ``(n_vars, dim)`` embeddings (zeros without knowledge);
    - ``adata.var["kbfm_has_knowledge"]`` and ``adata.var["kbfm_symbol"]``;
    - ``adata.uns["kbfm"]["embed_genes"]``: source, encoder and match counts.

    Examples
    --------
    >>> import scanpy as sc, kbfm
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> kbfm.tl.embed_genes(adata)
    >>> adata.varm["kbfm_gene_text"].shape[1]
    384
    """
    check_adata(adata)
    vectors = gene_vectors(
        adata.var_names, source=source, encoder=encoder, species=species, cache=cache
    )
    adata = adata.copy() if copy else adata
    adata.varm[key_added] = vectors.matrix
    adata.var[HAS_KNOWLEDGE_KEY] = vectors.has_knowledge
    adata.var[SYMBOL_KEY] = [s if s is not None else "" for s in vectors.symbols]
    record_step(
        adata,
        "embed_genes",
        key_added=key_added,
        n_unmatched_names=vectors.report.n_unmatched,
        **vectors.provenance,
    )
    return adata if copy else None
