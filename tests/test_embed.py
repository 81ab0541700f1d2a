"""embed_genes / embed_cells: GenePT-w maths, cell sentences, sparse input, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

import kbfm
from kbfm._errors import KbfmInputError
from kbfm.knowledge import GeneKnowledge


@pytest.fixture
def tiny_knowledge(tmp_path):
    table = pd.DataFrame(
        {
            "symbol": ["CD3E", "MS4A1", "LYZ", "NKG7"],
            "description": [
                "T cell receptor complex subunit expressed on T lymphocytes",
                "B lymphocyte surface antigen CD20",
                "lysozyme, an antimicrobial enzyme abundant in monocytes",
                "natural killer cell granule protein",
            ],
        }
    )
    path = tmp_path / "genes.tsv"
    table.to_csv(path, sep="\t", index=False)
    return GeneKnowledge.from_table(path)


@pytest.fixture
def small_adata():
    X = np.array([[5, 0, 1, 0, 2], [0, 4, 0, 0, 1], [1, 0, 6, 2, 0]], dtype=np.float32)
    return AnnData(
        sp.csr_matrix(X), var=pd.DataFrame(index=["CD3E", "MS4A1", "LYZ", "NKG7", "UNKNOWN1"])
    )


def test_embed_genes_writes_varm_and_flags(small_adata, tiny_knowledge, minilm):
    kbfm.tl.embed_genes(small_adata, source=tiny_knowledge)
    emb = small_adata.varm["kbfm_gene_text"]
    assert emb.shape == (5, 384)
    assert small_adata.var["kbfm_has_knowledge"].tolist() == [True, True, True, True, False]
    assert np.all(emb[4] == 0)
    expected = minilm.encode([tiny_knowledge.text("LYZ")])[0]
    np.testing.assert_allclose(emb[2], expected, atol=1e-5)
    record = small_adata.uns["kbfm"]["embed_genes"]
    assert record["n_genes_with_knowledge"] == 4 and record["encoder"] == "minilm"


def test_genept_w_is_the_weighted_mean(small_adata, tiny_knowledge):
    kbfm.tl.embed_genes(small_adata, source=tiny_knowledge)
    kbfm.tl.embed_cells(small_adata)
    G = small_adata.varm["kbfm_gene_text"][:4]
    X = small_adata.X.toarray()[:, :4]
    naive = (X[:, :, None] * G[None]).sum(1)
    naive /= np.linalg.norm(naive, axis=1, keepdims=True)
    np.testing.assert_allclose(small_adata.obsm["X_genetext"], naive, atol=1e-5)
    assert small_adata.uns["kbfm"]["embed_cells"]["method"] == "genept_w"


def test_sparse_and_dense_input_agree_and_sparse_stays_sparse(small_adata, tiny_knowledge):
    dense = small_adata.copy()
    dense.X = dense.X.toarray()
    a = kbfm.tl.embed_cells(small_adata, source=tiny_knowledge, chunk_size=2, copy=True)
    b = kbfm.tl.embed_cells(dense, source=tiny_knowledge, copy=True)
    np.testing.assert_allclose(a.obsm["X_genetext"], b.obsm["X_genetext"], atol=1e-5)
    assert sp.issparse(small_adata.X) and "X_genetext" not in small_adata.obsm  # copy=True


def test_relative_weighting_ignores_genes_every_cell_has():
    X = np.array([[10, 1, 0], [10, 0, 1], [10, 1, 1]], dtype=np.float32)
    genes = np.eye(3, dtype=np.float32)
    from kbfm.tl.embed_cells import _genept_w

    rel = _genept_w(sp.csr_matrix(X), genes, relative=True, chunk_size=2)
    raw = _genept_w(sp.csr_matrix(X), genes, relative=False, chunk_size=2)
    assert raw[0, 0] > 0.9  # the constant gene dominates raw GenePT-w
    assert rel[0, 0] == 0 and rel[0, 1] > 0.99


def test_cell_sentence_ranks_genes(small_adata, tiny_knowledge, minilm):
    from kbfm.tl.embed_cells import cell_sentences

    sentences = cell_sentences(small_adata.X, list(small_adata.var_names), top_k=2)
    assert sentences[0] == "A cell with genes ranked by expression: CD3E UNKNOWN1"
    kbfm.tl.embed_cells(small_adata, method="cell_sentence", top_k=2)
    np.testing.assert_allclose(
        small_adata.obsm["X_genetext"][0], minilm.encode(sentences[:1])[0], atol=1e-5
    )


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda a: a[:0].copy(), "empty"),
        (lambda a: AnnData(-a.X.toarray(), var=a.var), "negative values"),
        (lambda a: AnnData(np.where(a.X.toarray() > 4, np.nan, a.X.toarray()), var=a.var), "NaN"),
    ],
)
def test_bad_expression_is_refused_before_work(small_adata, tiny_knowledge, make, pattern):
    bad = make(small_adata)
    before = bad.copy()
    with pytest.raises(KbfmInputError, match=pattern):
        kbfm.tl.embed_cells(bad, source=tiny_knowledge)
    assert "X_genetext" not in bad.obsm and bad.uns == before.uns


def test_no_gene_overlap_names_examples(tiny_knowledge):
    adata = AnnData(
        np.ones((2, 3), dtype=np.float32), var=pd.DataFrame(index=["FOO1", "BAR2", "BAZ3"])
    )
    with pytest.raises(KbfmInputError, match=r"None of the 3 genes.*'FOO1'.*'CD3E'"):
        kbfm.tl.embed_genes(adata, source=tiny_knowledge)


def test_unmappable_ensembl_ids_are_explained(tiny_knowledge):
    names = ["ENSG99999999991", "ENSG99999999992", "ENSG99999999993"]
    adata = AnnData(np.ones((2, 3), dtype=np.float32), var=pd.DataFrame(index=names))
    with pytest.raises(KbfmInputError, match="look like Ensembl ids"):
        kbfm.tl.embed_genes(adata, source=tiny_knowledge)


def test_ensembl_ids_are_mapped_to_symbols(tiny_knowledge):
    # ENSG00000198851 = CD3E, ENSG00000156738 = MS4A1 (GENCODE v44, shipped by celltypist)
    adata = AnnData(
        np.ones((2, 2), dtype=np.float32),
        var=pd.DataFrame(index=["ENSG00000198851.10", "ENSG00000156738"]),
    )
    kbfm.tl.embed_genes(adata, source=tiny_knowledge)
    assert adata.var["kbfm_symbol"].tolist() == ["CD3E", "MS4A1"]
    assert adata.var["kbfm_has_knowledge"].all()
