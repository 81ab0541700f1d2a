"""GenePT-w throughput: 1,000,000 cells x 20,000 genes (sparse, ~5% non-zero) x 384-d.

kbfm streams the generated matrix in row chunks through ``kbfm.tl.genept_w_stream``
(torch CSR matmul). The baseline is a naive dense NumPy implementation of the GenePT-w
formula (densify, then per cell: sum of expression x gene embedding / number of genes)
on a subset, measured in the same run; we also time a dense BLAS matmul on the subset.
Peak memory of the kbfm run is measured in its own process (ru_maxrss).

Run: python benchmarks/genept_throughput.py [--cells 1000000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

N_GENES, DIM, DENSITY, CHUNK = 20_000, 384, 0.05, 10_000
RESULTS = Path(__file__).parent / "results"


def make_chunk(rng: np.random.Generator, n_cells: int) -> sp.csr_matrix:
    """Generate a CSR block with ~5% non-zeros per row and count-like values."""
    per_row = int(N_GENES * DENSITY)
    indptr = np.arange(0, n_cells * per_row + 1, per_row, dtype=np.int64)
    indices = np.sort(
        rng.integers(0, N_GENES, size=(n_cells, per_row), dtype=np.int32), axis=1
    ).ravel()
    data = (rng.geometric(0.4, size=n_cells * per_row)).astype(np.float32)
    return sp.csr_matrix((data, indices, indptr), shape=(n_cells, N_GENES))


def gene_matrix() -> np.ndarray:
    genes = np.random.default_rng(0).standard_normal((N_GENES, DIM)).astype(np.float32)
    return genes / np.linalg.norm(genes, axis=1, keepdims=True)


def run_kbfm(n_cells: int, queue) -> None:
    from kbfm.tl import genept_w_stream

    genes = gene_matrix()
    rng = np.random.default_rng(1)
    out = np.empty((n_cells, DIM), dtype=np.float32)
    gen_s = 0.0

    def blocks():
        nonlocal gen_s
        for start in range(0, n_cells, CHUNK):
            t = time.perf_counter()
            block = make_chunk(rng, min(CHUNK, n_cells - start))
            gen_s += time.perf_counter() - t
            yield block

    t0 = time.perf_counter()
    row = 0
    for emb in genept_w_stream(blocks(), genes):
        out[row : row + len(emb)] = emb
        row += len(emb)
    total = time.perf_counter() - t0
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    queue.put(
        {
            "total_s": total,
            "generate_s": gen_s,
            "embed_s": total - gen_s,
            "peak_rss_gib": peak_gib,
            "checksum": float(out[:: max(n_cells // 1000, 1)].sum()),
        }
    )


def naive_dense(block: sp.csr_matrix, genes: np.ndarray) -> np.ndarray:
    dense = block.toarray()
    out = np.empty((dense.shape[0], genes.shape[1]), dtype=np.float32)
    for i, x in enumerate(dense):
        out[i] = (x[:, None] * genes).sum(axis=0) / dense.shape[1]
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--baseline-cells", type=int, default=200)
    args = parser.parse_args()

    genes = gene_matrix()
    block = make_chunk(np.random.default_rng(2), args.baseline_cells)
    t = time.perf_counter()
    naive = naive_dense(block, genes)
    naive_s = time.perf_counter() - t
    t = time.perf_counter()
    dense = block.toarray() @ genes
    blas_s = time.perf_counter() - t
    from kbfm.tl import genept_w_stream

    list(genept_w_stream([block[:10]], genes))  # warm-up: torch import and thread pool
    t = time.perf_counter()
    (ours,) = list(genept_w_stream([block], genes))
    ours_subset_s = time.perf_counter() - t
    np.testing.assert_allclose(ours, naive, atol=1e-4)
    np.testing.assert_allclose(
        ours, dense / np.linalg.norm(dense, axis=1, keepdims=True), atol=1e-4
    )

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=run_kbfm, args=(args.cells, queue))
    proc.start()
    res = queue.get()
    proc.join()

    naive_rate = args.baseline_cells / naive_s
    ours_rate = args.cells / res["embed_s"]
    result = {
        "n_cells": args.cells,
        "n_genes": N_GENES,
        "dim": DIM,
        "density": DENSITY,
        "chunk": CHUNK,
        "kbfm_total_s": round(res["total_s"], 1),
        "kbfm_embed_s": round(res["embed_s"], 1),
        "generate_s": round(res["generate_s"], 1),
        "kbfm_peak_rss_gib": round(res["peak_rss_gib"], 2),
        "kbfm_cells_per_s": round(ours_rate),
        "naive_dense_cells": args.baseline_cells,
        "naive_dense_cells_per_s": round(naive_rate, 1),
        "dense_blas_cells_per_s": round(args.baseline_cells / blas_s, 1),
        "kbfm_subset_cells_per_s": round(args.baseline_cells / ours_subset_s, 1),
        "speedup_vs_naive_dense": round(ours_rate / naive_rate, 1),
        "target": "1M cells < 120 s total, peak < 4 GiB",
        "target_met": bool(res["total_s"] < 120 and res["peak_rss_gib"] < 4),
        "machine": f"{platform.machine()}, {mp.cpu_count()} cores",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "genept_throughput.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
