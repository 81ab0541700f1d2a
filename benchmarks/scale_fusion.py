"""FusionModel base at 10k-1M spots: time per epoch, time to early stop, peak RSS, ARI.

Generated layered tissue (as the demo's, made sparse and larger): spots on a square grid
split into horizontal bands, 2,000 genes, about 5% of entries non-zero. The first
20 genes of each band are its markers. Every size runs in its own process, so each
peak RSS (``ru_maxrss``) is that size's alone, data generation included.

- ``train``: ``FusionModel.setup(adata, preset="base")`` (default gene selection: Moran's
  I over the spot graph) + ``train()`` with the default ``batch_size="auto"`` (full batch
  up to 20,000 spots, else tiles of 2,048) or the batch size given, streamed
  ``to_adata()``, ``kbfm.tl.domains`` (default tied mixture, 10 restarts) -> ARI.
- ``infer``: load a model saved by a ``train`` run and write ``obsm["X_kbfm"]`` for
  a larger generated slice in streamed chunks (inference memory), then cluster it.

Run::

    python benchmarks/scale_fusion.py                          # 10k and 100k train, 1M infer
    python benchmarks/scale_fusion.py --only train:10000:full  # one configuration

Results: ``benchmarks/results/scale.json`` (configurations computed in a run replace
the same ones; others are kept).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
N_GENES = 2000
N_LAYERS = 5
MARKERS = 20
BACKGROUND = 0.05  # chance that a non-marker entry is non-zero
MODEL_DIR = Path(os.environ.get("TMPDIR", "/tmp")) / "kbfm_scale_model"


def layered_tissue(n_spots: int, seed: int = 0, chunk: int = 50_000):
    """Sparse counts of ``n_spots`` spots on a grid, ``N_LAYERS`` horizontal bands."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n_spots)))
    i = np.arange(n_spots)
    coords = np.column_stack([i % side, i // side]).astype(np.float32) * 100.0
    layer = np.minimum((i // side) * N_LAYERS // side, N_LAYERS - 1)
    blocks = []
    for start in range(0, n_spots, chunk):
        rows = np.arange(start, min(start + chunk, n_spots))
        library = rng.lognormal(0.0, 0.3, size=len(rows))
        # background: random positions, small counts
        nnz = rng.poisson(BACKGROUND * N_GENES, size=len(rows))
        r = np.repeat(np.arange(len(rows)), nnz)
        c = rng.integers(N_LAYERS * MARKERS, N_GENES, size=r.size)
        v = 1.0 + rng.poisson(0.3 * library[r])
        bg = sp.csr_matrix((v.astype(np.float32), (r, c)), shape=(len(rows), N_GENES))
        # markers: dense Poisson over the marker columns only, high in the spot's band
        mu = np.full((len(rows), N_LAYERS * MARKERS), 0.3)
        for d in range(N_LAYERS):
            mu[layer[rows] == d, d * MARKERS : (d + 1) * MARKERS] = 3.0
        mk = rng.poisson(mu * library[:, None]).astype(np.float32)
        mk = sp.csr_matrix(mk)
        mk.resize(len(rows), N_GENES)
        block = bg + mk
        block.sum_duplicates()
        blocks.append(block.tocsr())
    X = sp.vstack(blocks, format="csr")
    obs = pd.DataFrame(
        {"layer": pd.Categorical(layer.astype(str))}, index=[f"s{k}" for k in range(n_spots)]
    )
    var = pd.DataFrame(index=[f"GENE{g}" for g in range(N_GENES)])
    return ad.AnnData(X, obs=obs, var=var, obsm={"spatial": coords})


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def cluster_ari(adata, n_init: int) -> tuple[float, float]:
    import kbfm

    t = time.perf_counter()
    kbfm.tl.domains(adata, n_domains=N_LAYERS, n_init=n_init)
    return kbfm.tl.evaluate_domains(adata, "layer")["ari"], time.perf_counter() - t


def train(n_spots: int, batch_size) -> dict:
    import kbfm
    from kbfm.models import FusionModel

    kbfm.settings.progress = False
    t = time.perf_counter()
    adata = layered_tissue(n_spots)
    density = adata.X.nnz / (adata.n_obs * adata.n_vars)
    out = {"generate_s": time.perf_counter() - t, "nnz_fraction": density}
    t = time.perf_counter()
    model = FusionModel.setup(adata, preset="base")
    out["setup_s"] = time.perf_counter() - t
    model.train(batch_size=batch_size)
    per_epoch = [h["seconds"] for h in model.history]
    t = time.perf_counter()
    model.to_adata()
    out["inference_s"] = time.perf_counter() - t
    out["ari"], out["cluster_s"] = cluster_ari(adata, n_init=10)
    model.save(MODEL_DIR, overwrite=True)  # one folder for every size
    return out | {
        "batch_size": model.batch_size,
        "epochs": len(model.history),
        "steps_per_epoch": model.history[0]["steps"],
        "seconds_per_epoch_median": float(np.median(per_epoch)),
        "train_s": model.train_seconds,
        "peak_rss_gib": peak_gib(),
    }


def infer(n_spots: int) -> dict:
    import kbfm
    from kbfm.models import FusionModel

    kbfm.settings.progress = False
    t = time.perf_counter()
    adata = layered_tissue(n_spots, seed=1)
    out = {"generate_s": time.perf_counter() - t, "data_peak_rss_gib": peak_gib()}
    t = time.perf_counter()
    model = FusionModel.load(MODEL_DIR, adata)
    out["load_and_graph_s"] = time.perf_counter() - t
    t = time.perf_counter()
    model.to_adata()
    out["inference_s"] = time.perf_counter() - t
    out["peak_rss_gib"] = peak_gib()
    out["ari"], out["cluster_s"] = cluster_ari(adata, n_init=1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", nargs="+",
        default=["train:10000:auto", "train:100000:auto", "infer:1000000"],
        help="mode:n_spots[:batch_size] with batch_size auto, full or an integer",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    args = parser.parse_args()
    old = json.loads(args.out.read_text()) if args.out.is_file() else {}
    rows = old.get("rows", {})
    ctx = mp.get_context("spawn")
    for spec in args.only:
        mode, n, *rest = spec.split(":")
        bs = rest[0] if rest else "auto"
        batch = {"auto": "auto", "full": None}[bs] if bs in ("auto", "full") else int(bs)
        job, job_args = (train, (int(n), batch)) if mode == "train" else (infer, (int(n),))
        started = time.perf_counter()
        with ctx.Pool(1) as pool:
            res = pool.apply(job, job_args)
        res["wall_s"] = time.perf_counter() - started
        res["run"] = time.strftime("%Y-%m-%d %H:%M")
        rows[spec] = res
        print(spec, json.dumps(res), flush=True)
        args.out.parent.mkdir(exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "data": f"generated layered tissue: grid, {N_LAYERS} bands, {N_GENES} genes "
                    f"({MARKERS} markers per band), ~{BACKGROUND:.0%} background non-zeros",
                    "model": "FusionModel base, default setup",
                    "machine": "CPU, 2 cores shared with three other workers (timings noisy)",
                    "command": "python benchmarks/scale_fusion.py --only ...",
                    "rows": rows,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
