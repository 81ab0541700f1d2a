"""``kbfm.tl.query``: similarity of every cell to a free-text query."""

from __future__ import annotations

import re

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from .._dask import full_width, is_dask, map_rows
from .._errors import KbfmInputError
from .._keys import GENE_TEXT_KEY, HAS_KNOWLEDGE_KEY, SYMBOL_KEY
from .._provenance import record_step
from .._validate import check_finite
from ..encoders import TextEncoder, encode_texts, get_text_encoder
from .embed_cells import CELL_TEXT_KEY


def _query_key(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40]
    return f"kbfm_query_{slug or 'text'}"


def _cosine_rows(block, vec: np.ndarray) -> np.ndarray:
    """Cosine of each row of ``block`` with the unit vector ``vec``."""
    cells = np.asarray(block, dtype=np.float32)
    return (cells @ vec / np.maximum(np.linalg.norm(cells, axis=1), 1e-12)).astype(np.float32)


def _marker_prior(
    adata: AnnData, text: str, enc: TextEncoder, species: str
) -> tuple[np.ndarray | None, str]:
    """Unit mean gene-text embedding of the markers of the Cell Ontology term ``text`` names.

    Returns ``(vector, term id)``, or ``(None, "")`` when ``text`` is no term, there is no
    ``varm["kbfm_gene_text"]`` or none of the term's markers has knowledge.
    """
    if GENE_TEXT_KEY not in adata.varm:
        return None, ""
    from ..knowledge import CellOntology, marker_sets

    term_id = CellOntology.load().lookup(text)
    if term_id is None:
        return None, ""
    gene_text = np.asarray(adata.varm[GENE_TEXT_KEY], dtype=np.float32)
    genes = {g.upper() for g in marker_sets(species=species, cell_types=[term_id]).get(term_id, [])}
    symbols = adata.var.get(SYMBOL_KEY, adata.var_names.to_series()).astype(str).str.upper()
    if HAS_KNOWLEDGE_KEY in adata.var:
        known = np.asarray(adata.var[HAS_KNOWLEDGE_KEY], dtype=bool)  # dask var: no dtype=
    else:  # embed_genes leaves zero rows for genes without knowledge
        known = np.abs(gene_text).sum(axis=1) > 0
    rows = np.flatnonzero(symbols.isin(genes).to_numpy() & known)
    if not rows.size:
        return None, ""
    if gene_text.shape[1] != enc.dim:
        msg = (
            f"The query names {term_id}, whose marker genes come from "
            f"varm[{GENE_TEXT_KEY!r}], but those are {gene_text.shape[1]}-d and encoder "
            f"{enc.name!r} gives {enc.dim}-d vectors; rerun kbfm.tl.embed_genes with this "
            "encoder or pass ontology_prior=False."
        )
        raise KbfmInputError(msg)
    check_finite(gene_text[rows], f"adata.varm[{GENE_TEXT_KEY!r}] (marker genes of {term_id})")
    mean = gene_text[rows].mean(axis=0)
    return mean / max(np.linalg.norm(mean), 1e-12), term_id


def query(
    adata: AnnData,
    text: str,
    *,
    use_rep: str = CELL_TEXT_KEY,
    encoder: str | TextEncoder | None = None,
    ontology_prior: bool = True,
    species: str = "auto",
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Score every cell or spot against a free-text query (CellWhisperer-style).

    The query is embedded with the encoder that made ``obsm[use_rep]`` and compared
    by cosine with each cell embedding. When the query names a Cell Ontology term
    (label or synonym) and ``ontology_prior`` is true, the mean embedding of that
    term's curated marker genes (from ``varm["kbfm_gene_text"]``) is added to the query
    vector, so "regulatory T cell" finds cells that express Treg markers.

    Parameters
    ----------
    adata
        Data with ``obsm[use_rep]`` from :func:`kbfm.tl.embed_cells`. ``X`` may be a dask
        array (it is not read), and so may ``obsm[use_rep]``: the scores are then
        computed one row chunk at a time on dask's current scheduler.
    text
        The query, e.g. ``"cytotoxic lymphocytes"``.
    use_rep
        Cell embedding key.
    encoder
        Text encoder; default: the one recorded by ``embed_cells``.
    ontology_prior
        Blend in marker knowledge when the query is a Cell Ontology term.
    species
        Marker species (``"auto"``: the one recorded by :func:`kbfm.tl.embed_cells`,
        else read off the gene names).
    key_added
        ``obs`` column (default ``kbfm_query_<slug of text>``).
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the copy when ``copy=True``. Writes cosine similarities to
    ``obs[key_added]``.

    Examples
    --------
    >>> import scanpy as sc, kbfm
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> kbfm.tl.embed_genes(adata)
    >>> kbfm.tl.embed_cells(adata, use_raw=True, weighting="relative")
    >>> kbfm.tl.query(adata, "B cell", key_added="b_like")
    >>> float(adata.obs["b_like"].max()) <= 1.0
    True
    """
    if not isinstance(text, str) or not text.strip():
        msg = "query text must be a non-empty string."
        raise KbfmInputError(msg)
    if use_rep not in adata.obsm:
        msg = f"adata.obsm[{use_rep!r}] not found; run kbfm.tl.embed_cells(adata) first."
        raise KbfmInputError(msg)
    if copy and getattr(adata, "isbacked", False):
        msg = (
            f"copy=True cannot copy an AnnData backed by {adata.filename}; query writes only "
            "obs, so pass copy=False, or load it first with adata.to_memory()."
        )
        raise KbfmInputError(msg)
    cells = adata.obsm[use_rep]
    lazy = is_dask(cells)
    if lazy:
        cells = full_width(cells, f"adata.obsm[{use_rep!r}]", columns="dimensions")
    else:
        cells = cells.toarray() if sp.issparse(cells) else cells
        cells = np.asarray(cells, dtype=np.float32)
        check_finite(cells, f"adata.obsm[{use_rep!r}]")
    recorded = adata.uns.get("kbfm", {}).get("embed_cells", {})
    enc = get_text_encoder(encoder or recorded.get("encoder", "minilm"))
    if enc.dim != cells.shape[1]:
        msg = (
            f"Encoder {enc.name!r} gives {enc.dim}-d vectors but obsm[{use_rep!r}] is "
            f"{cells.shape[1]}-d; pass the encoder that made the cell embeddings."
        )
        raise KbfmInputError(msg)
    if species == "auto":
        from ..knowledge.species import resolve_species

        species = recorded.get("species") or resolve_species("auto", adata.var_names)
    prior, prior_used = _marker_prior(adata, text, enc, species) if ontology_prior else (None, "")
    vec = encode_texts([text], enc)[0]
    if prior is not None:
        vec = vec + prior
    vec = (vec / max(np.linalg.norm(vec), 1e-12)).astype(np.float32)
    if lazy:
        scores = map_rows(cells, _cosine_rows, vec, width=None).compute()
    else:
        scores = _cosine_rows(cells, vec)
    key = key_added or _query_key(text)
    adata = adata.copy() if copy else adata
    adata.obs[key] = scores.astype(np.float32)
    record_step(
        adata,
        f"query_{key}",
        text=text,
        use_rep=use_rep,
        encoder=enc.name,
        ontology_prior=prior_used,
        dask=lazy,
    )
    return adata if copy else None
