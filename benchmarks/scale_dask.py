"""GenePT-w through dask: cells x 20,000 genes (5% non-zero) stored in zarr.

The matrix is generated in 10,000-cell CSR blocks (the generator of
``genept_throughput.py``) and appended to a zarr store with anndata's sparse writer, so
it is never whole in memory. ``kbfm.tl.embed_cells`` (GenePT-w, 384-d gene vectors
already in ``varm``) then runs three ways, each in its own process:

- in memory: the store read whole into a CSR matrix (timed apart), then embedded;
- dask, threaded scheduler: ``X`` read lazily with ``anndata.experimental.read_elem_lazy``
  (row chunks of ``--chunk`` cells, all genes), no client;
- dask, ``distributed.LocalCluster`` with 2 worker processes x 1 thread on loopback.

All three use the 2 cores. Peak memory: ru_maxrss of the process (in memory, threaded)
and of each worker process (LocalCluster). The dask paths run at two sizes (a quarter
of ``--cells`` and ``--cells``) so that per-worker memory can be seen not to grow with n.
Embeddings of the dask paths are checked against the in-memory ones.

Run: python benchmarks/scale_dask.py [--cells 200000] [--chunk 10000] [--store PATH]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from genept_throughput import DIM, N_GENES, gene_matrix, make_chunk

RESULTS = Path(__file__).parent / "results"
GENERATE_BLOCK = 10_000


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def write_store(path: Path, n_cells: int) -> float:
    """Append generated CSR blocks to ``path``/X (anndata's zarr sparse layout)."""
    import zarr
    from anndata.io import sparse_dataset, write_elem

    t = time.perf_counter()
    rng = np.random.default_rng(1)
    group = zarr.open_group(path, mode="w", zarr_format=3)
    write_elem(group, "X", make_chunk(rng, min(GENERATE_BLOCK, n_cells)))
    matrix = sparse_dataset(group["X"])
    for start in range(GENERATE_BLOCK, n_cells, GENERATE_BLOCK):
        matrix.append(make_chunk(rng, min(GENERATE_BLOCK, n_cells - start)))
    return time.perf_counter() - t


def cells_adata(X):
    """AnnData with the benchmark's gene vectors in varm, as embed_genes leaves them."""
    import pandas as pd
    from anndata import AnnData

    adata = AnnData(X, var=pd.DataFrame(index=[f"G{i}" for i in range(N_GENES)]))
    adata.varm["kbfm_gene_text"] = gene_matrix()
    adata.var["kbfm_has_knowledge"] = True
    adata.uns["kbfm"] = {"embed_genes": {"encoder": "bench", "encoder_model_id": "bench/random"}}
    return adata


def encoder():
    """An encoder that names the one recorded with the gene vectors; it never encodes."""
    from kbfm.encoders import TextEncoder

    class BenchEncoder(TextEncoder):
        name, model_id, revision, dim = "bench", "bench/random", "1", DIM

    return BenchEncoder()


def lazy_x(store: Path, n_cells: int, chunk: int):
    import anndata as ad
    import zarr

    X = ad.experimental.read_elem_lazy(zarr.open_group(store, mode="r")["X"], chunks=(chunk, -1))
    return X[:n_cells]


def sample(emb: np.ndarray) -> list:
    return emb[:: max(len(emb) // 200, 1)].tolist()


def run_in_memory(store: str, n_cells: int, queue) -> None:
    import zarr
    from anndata.io import read_elem

    import kbfm

    t = time.perf_counter()
    X = read_elem(zarr.open_group(store, mode="r")["X"])
    X = X[:n_cells] if X.shape[0] > n_cells else X
    load_s = time.perf_counter() - t
    adata = cells_adata(X)
    t = time.perf_counter()
    kbfm.tl.embed_cells(adata, encoder=encoder())
    embed_s = time.perf_counter() - t
    emb = adata.obsm["X_genetext"]
    queue.put({"load_s": load_s, "embed_s": embed_s, "peak_gib": peak_gib(), "sample": sample(emb)})


def run_threaded(store: str, n_cells: int, chunk: int, queue) -> None:
    import dask

    import kbfm

    adata = cells_adata(lazy_x(Path(store), n_cells, chunk))
    t = time.perf_counter()
    kbfm.tl.embed_cells(adata, encoder=encoder())
    embed_s = time.perf_counter() - t
    queue.put(
        {
            "embed_s": embed_s,
            "peak_gib": peak_gib(),
            "threads": dask.config.get("num_workers", None) or os.cpu_count(),
            "sample": sample(adata.obsm["X_genetext"]),
        }
    )


def _warm_up() -> None:
    import torch  # noqa: F401

    import kbfm.tl.embed_cells  # noqa: F401


def _worker_peak() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_cluster(store: str, n_cells: int, chunk: int, queue) -> None:
    from distributed import Client, LocalCluster

    import kbfm

    t = time.perf_counter()
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(_warm_up)  # worker start-up cost, timed with the cluster start
        start_s = time.perf_counter() - t
        before = client.run(_worker_peak)
        adata = cells_adata(lazy_x(Path(store), n_cells, chunk))
        t = time.perf_counter()
        kbfm.tl.embed_cells(adata, encoder=encoder())
        embed_s = time.perf_counter() - t
        after = client.run(_worker_peak)
    queue.put(
        {
            "embed_s": embed_s,
            "cluster_start_s": start_s,
            "client_peak_gib": peak_gib(),
            "worker_peak_gib_before": sorted(before.values()),
            "worker_peak_gib": sorted(after.values()),
            "sample": sample(adata.obsm["X_genetext"]),
        }
    )


def in_process(target, *args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=200_000)
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--store", type=Path, default=None)
    args = parser.parse_args()
    store = args.store or Path(tempfile.gettempdir()) / f"kbfm_scale_dask_{args.cells}.zarr"
    t0 = time.perf_counter()
    write_s = write_store(store, args.cells)
    store_gib = sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 2**30
    print(f"store: {store} ({store_gib:.2f} GiB) written in {write_s:.0f} s", flush=True)
    cores = mp.cpu_count()
    sizes = sorted({args.cells // 4, args.cells})
    memory = in_process(run_in_memory, str(store), args.cells)
    print(f"in memory: {memory['embed_s']:.1f} s (+{memory['load_s']:.1f} s load)", flush=True)
    rows = []
    for n in sizes:
        threaded = in_process(run_threaded, str(store), n, args.chunk)
        print(f"threaded {n}: {threaded['embed_s']:.1f} s", flush=True)
        cluster = in_process(run_cluster, str(store), n, args.chunk)
        print(f"cluster {n}: {cluster['embed_s']:.1f} s", flush=True)
        rows.append((n, threaded, cluster))
    load_avg = os.getloadavg()

    full = args.cells
    mem_rate = full / memory["embed_s"]
    mem_rate_with_load = full / (memory["embed_s"] + memory["load_s"])
    _, threaded, cluster = rows[-1]
    ref = np.asarray(memory["sample"])
    for name, res in (("threaded", threaded), ("cluster", cluster)):
        diff = float(np.abs(np.asarray(res["sample"]) - ref).max())
        if diff > 1e-5:
            raise SystemExit(f"{name} embeddings differ from the in-memory ones by {diff}")
    chunk_gib = args.chunk * N_GENES * 0.05 * 8 / 2**30  # CSR: float32 value + int32 index

    def per_core(rate: float) -> float:
        return round(rate / cores)

    result = {
        "n_cells": full,
        "n_genes": N_GENES,
        "density": 0.05,
        "dim": DIM,
        "chunk_cells": args.chunk,
        "chunk_csr_gib": round(chunk_gib, 3),
        "store_gib": round(store_gib, 2),
        "store_write_s": round(write_s, 1),
        "in_memory": {
            "load_s": round(memory["load_s"], 1),
            "embed_s": round(memory["embed_s"], 1),
            "cells_per_s": round(mem_rate),
            "cells_per_s_per_core": per_core(mem_rate),
            "cells_per_s_incl_load": round(mem_rate_with_load),
            "peak_rss_gib": round(memory["peak_gib"], 2),
        },
        "dask": [],
        "machine": f"{platform.machine()}, {cores} cores",
        "load_average_1_5_15": [round(v, 1) for v in load_avg],
        "total_s": round(time.perf_counter() - t0, 1),
    }
    for n, threaded, cluster in rows:
        t_rate, c_rate = n / threaded["embed_s"], n / cluster["embed_s"]
        result["dask"].append(
            {
                "n_cells": n,
                "threaded_embed_s": round(threaded["embed_s"], 1),
                "threaded_cells_per_s": round(t_rate),
                "threaded_cells_per_s_per_core": per_core(t_rate),
                "threaded_peak_rss_gib": round(threaded["peak_gib"], 2),
                "cluster_embed_s": round(cluster["embed_s"], 1),
                "cluster_start_s": round(cluster["cluster_start_s"], 1),
                "cluster_cells_per_s": round(c_rate),
                "cluster_cells_per_s_per_core": per_core(c_rate),
                "cluster_worker_peak_rss_gib": [round(v, 2) for v in cluster["worker_peak_gib"]],
                "cluster_worker_rss_before_gib": [
                    round(v, 2) for v in cluster["worker_peak_gib_before"]
                ],
                "cluster_client_peak_rss_gib": round(cluster["client_peak_gib"], 2),
            }
        )
    last = result["dask"][-1]
    result["ratio_vs_in_memory"] = {
        "threaded": round(last["threaded_cells_per_s"] / mem_rate, 2),
        "cluster": round(last["cluster_cells_per_s"] / mem_rate, 2),
        "threaded_vs_in_memory_incl_load": round(
            last["threaded_cells_per_s"] / mem_rate_with_load, 2
        ),
        "cluster_vs_in_memory_incl_load": round(
            last["cluster_cells_per_s"] / mem_rate_with_load, 2
        ),
    }
    result["target"] = "dask throughput >= 0.8x in-memory per core; memory bounded by chunk size"
    result["embeddings_match_in_memory"] = True
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scale_dask.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    if args.store is None:
        shutil.rmtree(store, ignore_errors=True)


if __name__ == "__main__":
    main()
