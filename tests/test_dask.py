"""Dask input: embed_cells and query chunk by chunk, equal to the in-memory path."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

import kbfm
from kbfm._errors import KbfmInputError
from kbfm.encoders import TextEncoder

da = pytest.importorskip("dask.array", reason="dask is an optional extra: pip install kbfm[dask]")

N_CELLS, N_GENES, DIM = 300, 40, 16


class SeededEncoder(TextEncoder):
    """Deterministic text vectors (a seed from the text), so no model is loaded."""

    name = "seeded"
    model_id = "test/seeded"
    revision = "1"
    dim = DIM

    def _encode_batch(self, texts):
        seeds = [sum(t.encode()) for t in texts]
        return np.stack([np.random.default_rng(s).standard_normal(DIM) for s in seeds]).astype(
            np.float32
        )


@pytest.fixture
def counts():
    """Sparse count-like matrix, 20% non-zero."""
    rng = np.random.default_rng(0)
    X = sp.random(N_CELLS, N_GENES, density=0.2, format="csr", dtype=np.float32, random_state=1)
    X.data = rng.integers(1, 30, size=X.nnz).astype(np.float32)
    return X


@pytest.fixture
def adata(counts):
    """Cells with gene text vectors already in varm (as embed_genes leaves them)."""
    rng = np.random.default_rng(2)
    adata = AnnData(counts, var=pd.DataFrame(index=[f"GENE{i}" for i in range(N_GENES)]))
    keep = np.ones(N_GENES, dtype=bool)
    keep[::6] = False  # some genes have no knowledge
    genes = rng.standard_normal((N_GENES, DIM)).astype(np.float32)
    genes[~keep] = 0
    adata.varm["kbfm_gene_text"] = genes
    adata.var["kbfm_has_knowledge"] = keep
    adata.uns["kbfm"] = {"embed_genes": {"encoder": "seeded", "encoder_model_id": "test/seeded"}}
    return adata


def lazy(adata: AnnData, X, chunks) -> AnnData:
    out = adata.copy()
    out.X = da.from_array(X, chunks=chunks, asarray=False)
    return out


@pytest.mark.parametrize("weighting", ["expression", "relative"])
@pytest.mark.parametrize("dense", [False, True], ids=["sparse-chunks", "dense-chunks"])
def test_genept_w_on_dask_equals_in_memory(adata, counts, weighting, dense):
    ref = kbfm.tl.embed_cells(adata, encoder=SeededEncoder(), weighting=weighting, copy=True)
    X = counts.toarray() if dense else counts
    lz = lazy(adata, X, chunks=(64, N_GENES))
    out = kbfm.tl.embed_cells(lz, encoder=SeededEncoder(), weighting=weighting, chunk_size=25)
    assert out is None and isinstance(lz.obsm["X_genetext"], np.ndarray)
    np.testing.assert_allclose(lz.obsm["X_genetext"], ref.obsm["X_genetext"], atol=1e-5)
    record = lz.uns["kbfm"]["embed_cells"]
    assert record["n_dask_chunks"] == 5 and record["dask_chunks"] == [64, N_GENES]
    assert record["n_genes_used"] == ref.uns["kbfm"]["embed_cells"]["n_genes_used"]


def test_cell_sentences_on_dask_equal_in_memory(adata, counts):
    kwargs = {"method": "cell_sentence", "weighting": "relative", "top_k": 5, "copy": True}
    ref = kbfm.tl.embed_cells(adata, encoder=SeededEncoder(), **kwargs)
    lz = lazy(adata, counts, (100, N_GENES))
    out = kbfm.tl.embed_cells(lz, encoder=SeededEncoder(), **kwargs)
    np.testing.assert_allclose(out.obsm["X_genetext"], ref.obsm["X_genetext"], atol=1e-6)


@pytest.mark.filterwarnings("ignore:Writing zarr v2 data:UserWarning")
def test_anndata_lazy_zarr_reader(adata, tmp_path):
    import anndata as ad

    ref = kbfm.tl.embed_cells(adata, encoder=SeededEncoder(), copy=True)
    adata.write_zarr(tmp_path / "cells.zarr")
    lz = ad.experimental.read_lazy(tmp_path / "cells.zarr")
    assert isinstance(lz.X, da.Array)
    kbfm.tl.embed_cells(lz, encoder=SeededEncoder())
    np.testing.assert_allclose(lz.obsm["X_genetext"], ref.obsm["X_genetext"], atol=1e-6)


def test_query_with_dask_x_and_dask_embedding(adata, counts):
    enc = SeededEncoder()
    ref = kbfm.tl.embed_cells(adata, encoder=enc, copy=True)
    kbfm.tl.query(ref, "cytotoxic lymphocyte", encoder=enc, key_added="q")
    lz = lazy(ref, counts, (64, N_GENES))
    kbfm.tl.query(lz, "cytotoxic lymphocyte", encoder=enc, key_added="q")
    np.testing.assert_allclose(lz.obs["q"], ref.obs["q"], atol=1e-6)
    lz.obsm["X_genetext"] = da.from_array(ref.obsm["X_genetext"], chunks=(50, DIM))
    kbfm.tl.query(lz, "cytotoxic lymphocyte", encoder=enc, key_added="q2")
    np.testing.assert_allclose(lz.obs["q2"], ref.obs["q"], atol=1e-6)
    assert lz.uns["kbfm"]["query_q2"]["dask"] is True


def test_chunks_split_along_genes_are_merged_with_a_warning(adata, counts, caplog):
    ref = kbfm.tl.embed_cells(adata, encoder=SeededEncoder(), copy=True)
    lz = lazy(adata, counts, chunks=(64, 15))
    with caplog.at_level(logging.WARNING, logger="kbfm._dask"):
        kbfm.tl.embed_cells(lz, encoder=SeededEncoder())
    assert "chunked along genes (3 column blocks" in caplog.text
    assert "chunks=(rows, 40)" in caplog.text
    np.testing.assert_allclose(lz.obsm["X_genetext"], ref.obsm["X_genetext"], atol=1e-6)


def test_unknown_chunk_sizes_and_wrong_rank_are_refused(counts):
    from kbfm._dask import full_width

    X = da.from_array(counts.toarray(), chunks=(64, N_GENES))
    filtered = X[X[:, 1] >= 0]  # boolean row filter: dask no longer knows the chunk sizes
    with pytest.raises(KbfmInputError, match=r"unknown chunk sizes.*compute_chunk_sizes"):
        full_width(filtered, "X")
    with pytest.raises(KbfmInputError, match="must be 2-d"):
        full_width(X[0], "X")


@pytest.mark.parametrize(
    ("value", "pattern"), [(-2.0, "negative values"), (np.nan, "NaN or infinite")]
)
@pytest.mark.parametrize("weighting", ["expression", "relative"])
def test_bad_values_in_a_chunk_are_refused(adata, counts, value, pattern, weighting):
    bad = counts.copy()
    bad.data[-1] = value  # in the last chunk only
    lz = lazy(adata, bad, chunks=(64, N_GENES))
    with pytest.raises(KbfmInputError, match=pattern):
        kbfm.tl.embed_cells(lz, encoder=SeededEncoder(), weighting=weighting)
    assert "X_genetext" not in lz.obsm and "embed_cells" not in lz.uns["kbfm"]


@pytest.mark.slow
def test_local_cluster_equals_in_memory(adata, counts):
    distributed = pytest.importorskip(
        "distributed", reason="distributed is an optional extra: pip install kbfm[dask]"
    )
    enc = SeededEncoder()
    ref = kbfm.tl.embed_cells(adata, encoder=enc, weighting="relative", copy=True)
    kbfm.tl.query(ref, "B cell", encoder=enc, ontology_prior=False, key_added="q")
    lz = lazy(adata, counts, chunks=(50, N_GENES))
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
        distributed.get_task_stream(client) as stream,
    ):
        # No client is passed: dask's compute() finds the active one.
        kbfm.tl.embed_cells(lz, encoder=enc, weighting="relative")
        lz.obsm["X_lazy"] = da.from_array(lz.obsm["X_genetext"], chunks=(50, DIM))
        kbfm.tl.query(lz, "B cell", use_rep="X_lazy", encoder=enc, ontology_prior=False)
    keys = [str(task["key"]) for task in stream.data]
    assert sum(k.startswith("('genept_w_block-") for k in keys) == 6  # one task per row chunk
    assert sum(k.startswith("('cosine_rows-") for k in keys) == 6
    assert len({task["worker"] for task in stream.data}) == 2
    np.testing.assert_allclose(lz.obsm["X_genetext"], ref.obsm["X_genetext"], atol=1e-5)
    np.testing.assert_allclose(lz.obs["kbfm_query_b_cell"], ref.obs["q"], atol=1e-5)


@pytest.fixture
def fusion_folder(tmp_path):
    """A tiny FusionModel trained in memory on generated spots (raw counts), saved."""
    from kbfm.models import FusionModel

    spots = kbfm.datasets.synthetic_spatial(n_side=14, n_genes=60, seed=3)
    spots.X = sp.csr_matrix(spots.X)
    model = FusionModel.setup(spots, preset="tiny", n_top_genes=40, seed=0, use_genetext=False)
    model.train(max_epochs=3)
    model.save(tmp_path / "model")
    return tmp_path / "model", spots


@pytest.mark.parametrize("batch_size", [None, 50], ids=["one-block", "tiles-of-50"])
def test_fusion_model_inference_on_dask_x_equals_in_memory(fusion_folder, batch_size):
    from kbfm.models import FusionModel

    folder, spots = fusion_folder
    ref = FusionModel.load(folder, spots).get_latent_representation(batch_size=batch_size)
    lz = lazy(spots, spots.X, chunks=(37, spots.n_vars))
    model = FusionModel.load(folder, lz)
    assert model._inputs.lazy  # the matrix was not read into memory by load
    z = model.get_latent_representation(batch_size=batch_size)
    np.testing.assert_allclose(z, ref, atol=1e-5)
    assert isinstance(lz.X, da.Array)  # the caller's data stays lazy


def test_fusion_model_refuses_bad_values_in_a_dask_chunk(fusion_folder):
    from kbfm._errors import KbfmInputError
    from kbfm.models import FusionModel

    folder, spots = fusion_folder
    bad = spots.X.toarray()
    bad[100, 5] = np.nan
    model = FusionModel.load(folder, lazy(spots, bad, chunks=(37, spots.n_vars)))
    with pytest.raises(KbfmInputError, match="NaN or infinite"):
        model.get_latent_representation(batch_size=50)
