"""``kbfm.tl.embed_cells``: cells as text-knowledge embeddings (GenePT-w and cell sentences)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Iterator
from typing import Literal

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from .._dask import check_block, dask_matrix, full_width, gene_moments, map_rows, shared
from .._errors import KbfmInputError
from .._keys import CELL_TEXT_KEY, HAS_KNOWLEDGE_KEY
from .._provenance import record_step
from .._settings import settings
from .._validate import check_adata, expression_matrix
from ..encoders import DEFAULT_TEXT_ENCODER, TextEncoder, encode_texts, get_text_encoder
from ..knowledge._gene_vectors import gene_vectors
from ..knowledge.gene_descriptions import DEFAULT_GENE_KNOWLEDGE
from .embed_genes import GENE_TEXT_KEY

logger = logging.getLogger(__name__)

SENTENCE_TEMPLATE = "A cell with genes ranked by expression: {genes}"


def _row_chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def gene_stats(
    X: np.ndarray | sp.csr_matrix, chunk_size: int = 8192
) -> tuple[np.ndarray, np.ndarray]:
    """Return per-gene mean and standard deviation (population), without densifying.

    Sums are accumulated in float64, ``chunk_size`` rows at a time: squares of float16
    values above 256 overflow, and float32 loses the variance of large counts.
    """
    n_obs, n_vars = X.shape
    total, total_sq = np.zeros(n_vars), np.zeros(n_vars)
    for rows in _row_chunks(n_obs, chunk_size):
        block = X[rows].astype(np.float64)
        squares = block.multiply(block) if sp.issparse(block) else np.square(block)
        total += np.asarray(block.sum(axis=0)).ravel()
        total_sq += np.asarray(squares.sum(axis=0)).ravel()
    mean = total / max(n_obs, 1)
    var = np.maximum(total_sq / max(n_obs, 1) - mean**2, 0.0)
    return mean, np.sqrt(var)


def relative_weights(
    block: np.ndarray | sp.csr_matrix, mean: np.ndarray, std: np.ndarray
) -> np.ndarray:
    """Expression relative to the other cells: per-gene z-score, negative part set to 0."""
    dense = block.toarray() if sp.issparse(block) else np.asarray(block)
    z = (dense - mean) / np.where(std > 0, std, 1.0)
    return np.maximum(z, 0.0).astype(np.float32)


def weighted_gene_mean(block: np.ndarray | sp.csr_matrix, genes: np.ndarray) -> np.ndarray:
    """GenePT-w kernel: ``block @ genes`` divided by the number of genes.

    Sparse blocks go through torch's multithreaded CSR matmul when torch is present.
    """
    n_genes = block.shape[1]
    if sp.issparse(block):
        try:
            import torch
        except ImportError:
            return np.asarray(block @ genes, dtype=np.float32) / n_genes
        csr = block.tocsr()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "CSR support is in beta"
            t = torch.sparse_csr_tensor(
                torch.from_numpy(csr.indptr.astype(np.int64)),
                torch.from_numpy(csr.indices.astype(np.int64)),
                torch.from_numpy(csr.data.astype(np.float32, copy=False)),
                size=csr.shape,
                check_invariants=False,
            )
        out = (t @ torch.from_numpy(np.ascontiguousarray(genes, dtype=np.float32))).numpy()
        return out / n_genes
    return np.asarray(block, dtype=np.float32) @ genes / n_genes


def genept_w_stream(
    blocks: Iterable[np.ndarray | sp.spmatrix], gene_matrix: np.ndarray
) -> Iterator[np.ndarray]:
    """Out-of-core GenePT-w: yield L2-normalised cell embeddings block by block.

    Use it for data that does not fit in memory (e.g. row chunks of a backed ``.h5ad``
    or of a zarr store); only one block is held at a time.

    Parameters
    ----------
    blocks
        Row blocks of the expression matrix (cells x genes, same gene order).
    gene_matrix
        ``(n_genes, dim)`` gene text embeddings (e.g. ``adata.varm["kbfm_gene_text"]``).

    Yields
    ------
    ``(n_cells_in_block, dim)`` float32 arrays.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> genes = np.eye(3, dtype=np.float32)
    >>> [b.shape for b in genept_w_stream([sp.csr_matrix(np.ones((2, 3)))], genes)]
    [(2, 3)]
    """
    genes = np.ascontiguousarray(gene_matrix, dtype=np.float32)
    for block in blocks:
        if block.shape[1] != genes.shape[0]:
            msg = f"Block has {block.shape[1]} genes but gene_matrix has {genes.shape[0]} rows."
            raise KbfmInputError(msg)
        yield _l2(weighted_gene_mean(block, genes))


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _genept_w_chunk(block, genes: np.ndarray, mean, std) -> np.ndarray:
    """Unnormalised GenePT-w of one row chunk (relative weights when ``mean`` is given)."""
    if mean is not None:
        block = relative_weights(block, mean, std)
    return weighted_gene_mean(block, genes)


def _genept_w(X, genes, *, relative: bool, chunk_size: int) -> np.ndarray:
    from tqdm.auto import tqdm

    out = np.zeros((X.shape[0], genes.shape[1]), dtype=np.float32)
    mean, std = gene_stats(X) if relative else (None, None)
    chunks = list(_row_chunks(X.shape[0], chunk_size))
    for rows in tqdm(chunks, desc="GenePT-w", disable=not settings.progress or len(chunks) < 2):
        out[rows] = _genept_w_chunk(X[rows], genes, mean, std)
    return _l2(out)


def _genept_w_block(block, genes, cols, mean, std, chunk_size: int, where: str) -> np.ndarray:  # noqa: PLR0917 (map_rows passes positionally)
    """GenePT-w of one dask row chunk: checked, genes selected, ``chunk_size`` rows at a time."""
    check_block(block, where)
    if len(cols) < block.shape[1]:  # every gene has knowledge: no copy
        block = block[:, cols]
    out = np.empty((block.shape[0], genes.shape[1]), dtype=np.float32)
    for rows in _row_chunks(block.shape[0], chunk_size):
        out[rows] = _genept_w_chunk(block[rows], genes, mean, std)
    return _l2(out)


def _genept_w_dask(X, genes, keep, *, relative: bool, chunk_size: int, where: str) -> np.ndarray:
    """GenePT-w over the row chunks of a dask array, on dask's current scheduler."""
    cols = np.flatnonzero(keep)
    mean = std = None
    if relative:
        mean, std = (m[cols] for m in gene_moments(X, where))
    lazy = map_rows(
        X,
        _genept_w_block,
        shared(np.ascontiguousarray(genes[keep], dtype=np.float32)),
        cols,
        mean,
        std,
        chunk_size,
        where,
        width=genes.shape[1],
    )
    return lazy.compute()


def _sentences_block(block, names, mean, std, chunk_size: int, top_k: int, where: str):  # noqa: PLR0917
    check_block(block, where)
    sentences: list[str] = []
    for rows in _row_chunks(block.shape[0], chunk_size):
        part = block[rows] if mean is None else relative_weights(block[rows], mean, std)
        sentences.extend(cell_sentences(part, names, top_k=top_k))
    return np.asarray(sentences, dtype=object)


def _cell_sentences_dask(X, names, *, relative: bool, chunk_size: int, top_k: int, where: str):
    mean, std = gene_moments(X, where) if relative else (None, None)
    lazy = map_rows(
        X, _sentences_block, names, mean, std, chunk_size, top_k, where, width=None, dtype=object
    )
    return [str(s) for s in lazy.compute()]


def cell_sentences(
    X: np.ndarray | sp.csr_matrix, gene_names: list[str], *, top_k: int = 50
) -> list[str]:
    """Return one GenePT-s sentence per cell: its top-``top_k`` genes by value."""
    names = np.asarray(gene_names, dtype=object)
    sentences = []
    for i in range(X.shape[0]):
        row = X[i].toarray().ravel() if sp.issparse(X) else np.asarray(X[i]).ravel()
        nz = np.flatnonzero(row > 0)
        top = nz[np.argsort(-row[nz], kind="stable")[:top_k]]
        sentences.append(SENTENCE_TEMPLATE.format(genes=" ".join(names[top])))
    return sentences


def _can_reuse_gene_text(adata: AnnData, source: object, enc: TextEncoder, use_raw: bool) -> bool:
    """Whether ``varm[GENE_TEXT_KEY]`` was built with this source and encoder."""
    if use_raw or GENE_TEXT_KEY not in adata.varm or HAS_KNOWLEDGE_KEY not in adata.var:
        return False
    if adata.varm[GENE_TEXT_KEY].shape[1] != enc.dim:
        return False
    made = adata.uns.get("kbfm", {}).get("embed_genes", {})
    same_encoder = made.get("encoder_model_id", enc.model_id) == enc.model_id
    if source is None:
        return same_encoder
    wanted = source.source if hasattr(source, "source") else str(source)
    built = str(made.get("knowledge_source", ""))
    if same_encoder and built == wanted:
        return True
    logger.info(
        "varm[%r] was built from knowledge %r with %s; recomputing for source %r.",
        GENE_TEXT_KEY,
        built or "unknown",
        made.get("encoder", "an unknown encoder"),
        wanted,
    )
    return False


def embed_cells(
    adata: AnnData,
    *,
    method: Literal["genept_w", "cell_sentence"] = "genept_w",
    weighting: Literal["expression", "relative"] = "expression",
    layer: str | None = None,
    use_raw: bool = False,
    source: object = None,
    encoder: str | TextEncoder = DEFAULT_TEXT_ENCODER,
    species: str = "auto",
    top_k: int = 50,
    chunk_size: int = 10_000,
    key_added: str = CELL_TEXT_KEY,
    cache: bool = True,
    copy: bool = False,
) -> AnnData | None:
    """Embed each cell or spot in the gene-knowledge text space.

    Parameters
    ----------
    adata
        Non-negative expression (counts or log-normalised) in ``X``, a layer or ``raw``.
        The matrix may be a dask array (e.g. from ``anndata.experimental.read_lazy`` on a
        zarr store), with dense or sparse chunks: it is then embedded one row chunk at a
        time on dask's current scheduler (threads, or the ``dask.distributed`` client you
        created), with the same result as in memory. Chunks split along genes are
        merged to full gene width, with a warning. See ``docs/scale.md``.
    method
        ``"genept_w"``: expression-weighted mean of gene text embeddings (GenePT-w).
        ``"cell_sentence"``: the top-``top_k`` genes as a sentence, embedded as one text
        (GenePT-s).
    weighting
        ``"expression"``: the values as given (GenePT-w). ``"relative"``: each gene's
        z-score across cells with the negative part set to 0, so genes every cell
        expresses do not dominate. Also used to rank genes for cell sentences.
    layer, use_raw
        Where to read expression.
    source, encoder, species
        Gene knowledge, text encoder and species (``"auto"``: detected from the gene
        names; see :func:`kbfm.tl.embed_genes`). ``source=None`` reuses
        ``adata.varm["kbfm_gene_text"]`` from an earlier :func:`~kbfm.tl.embed_genes`
        with the same encoder, else uses ``"atlas"``. A source given explicitly reuses
        ``varm`` only when it was built from that same source and encoder; otherwise
        the gene embeddings are recomputed (and a log line says why).
    top_k
        Genes per cell sentence.
    chunk_size
        Cells per chunk; sparse input stays sparse within a chunk. For dask input the
        dask chunks are the unit of work and ``chunk_size`` splits them further.
    key_added
        Key in ``adata.obsm``.
    cache
        Use the embedding cache.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the copy when ``copy=True``. Writes L2-normalised
    ``adata.obsm[key_added]`` and ``adata.uns["kbfm"]["embed_cells"]``.

    Examples
    --------
    >>> import scanpy as sc, kbfm
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> kbfm.tl.embed_cells(adata, use_raw=True, weighting="relative")
    >>> adata.obsm["X_genetext"].shape
    (700, 384)
    """
    if method not in ("genept_w", "cell_sentence"):
        msg = f"Unknown method {method!r}; choose 'genept_w' or 'cell_sentence'."
        raise KbfmInputError(msg)
    if weighting not in ("expression", "relative"):
        msg = f"Unknown weighting {weighting!r}; choose 'expression' or 'relative'."
        raise KbfmInputError(msg)
    if chunk_size < 1 or top_k < 1:
        msg = f"chunk_size and top_k must be positive (got {chunk_size}, {top_k})."
        raise KbfmInputError(msg)
    lazy = dask_matrix(adata, layer=layer, use_raw=use_raw)
    if lazy is not None:
        check_adata(adata)
        X, names, where = lazy
        X = full_width(X, where)
    else:
        X, names = expression_matrix(adata, layer=layer, use_raw=use_raw)
    enc = get_text_encoder(encoder) if not isinstance(encoder, TextEncoder) else encoder
    params = {
        "method": method,
        "weighting": weighting,
        "layer": layer,
        "use_raw": use_raw,
        "encoder": enc.name,
        "encoder_model_id": enc.model_id,
        "encoder_revision": enc.revision,
    }
    if lazy is not None:
        params.update(dask_chunks=[int(c) for c in X.chunksize], n_dask_chunks=X.numblocks[0])
    if method == "genept_w":
        reuse = _can_reuse_gene_text(adata, source, enc, use_raw)
        if source is None:
            source = DEFAULT_GENE_KNOWLEDGE
        if reuse:
            genes = np.asarray(adata.varm[GENE_TEXT_KEY], dtype=np.float32)
            keep = np.asarray(adata.var[HAS_KNOWLEDGE_KEY], dtype=bool)
            params["gene_embeddings"] = f"adata.varm[{GENE_TEXT_KEY!r}]"
        else:
            vectors = gene_vectors(names, source=source, encoder=enc, species=species, cache=cache)
            genes, keep = vectors.matrix, vectors.has_knowledge
            params.update(vectors.provenance)
        if lazy is not None:
            emb = _genept_w_dask(
                X,
                genes,
                keep,
                relative=weighting == "relative",
                chunk_size=chunk_size,
                where=where,
            )
        else:
            if not keep.all():  # a column selection copies the whole matrix
                X = X[:, np.flatnonzero(keep)]
            emb = _genept_w(X, genes[keep], relative=weighting == "relative", chunk_size=chunk_size)
        params["n_genes_used"] = int(keep.sum())
    elif lazy is not None:
        sentences = _cell_sentences_dask(
            X,
            names,
            relative=weighting == "relative",
            chunk_size=chunk_size,
            top_k=top_k,
            where=where,
        )
        emb = encode_texts(sentences, enc, cache=cache)
        params.update(top_k=top_k, template=SENTENCE_TEMPLATE)
    else:
        if weighting == "relative":
            mean, std = gene_stats(X)
            ranked = np.vstack(
                [relative_weights(X[r], mean, std) for r in _row_chunks(X.shape[0], chunk_size)]
            )
        else:
            ranked = X
        sentences = cell_sentences(ranked, names, top_k=top_k)
        emb = encode_texts(sentences, enc, cache=cache)
        params.update(top_k=top_k, template=SENTENCE_TEMPLATE)
    adata = adata.copy() if copy else adata
    adata.obsm[key_added] = emb
    record_step(adata, "embed_cells", key_added=key_added, **params)
    return adata if copy else None
