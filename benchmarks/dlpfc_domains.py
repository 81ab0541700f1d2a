"""Spatial domains on DLPFC 151675: baselines vs GenePT-w vs concatenation vs FusionModel.

Protocol: unannotated spots dropped, k = 7 (the annotated layers), Gaussian mixture,
median ARI over 5 seeds (seed = model seed = mixture seed); never the best of many runs.
Each FusionModel preset trains in its own process so its peak memory is measured alone.

Run: HF_HUB_OFFLINE=1 python benchmarks/dlpfc_domains.py
"""

from __future__ import annotations

import json
import multiprocessing as mp
import resource
import time
from pathlib import Path

import numpy as np

DATA = (
    Path(__file__).resolve().parents[1].parent
    / "shared/data/spatial/dlpfc_151675/dlpfc_151675.h5ad"
)
REFSEQ = (
    Path(__file__).resolve().parents[1].parent / "shared/data/genes/refseq_summaries_human.tsv.gz"
)
RESULTS = Path(__file__).parent / "results"
SEEDS = range(5)
LABEL = "layer_guess_reordered"


def load():
    import anndata as ad

    adata = ad.read_h5ad(DATA)
    return adata[adata.obs[LABEL].notna()].copy()


def ari_over_seeds(adata, rep: str) -> list[float]:
    import kbfm

    out = []
    for s in SEEDS:
        kbfm.tl.domains(adata, n_domains=7, use_rep=rep, seed=s, key_added="d")
        out.append(kbfm.tl.evaluate_domains(adata, LABEL, key="d")["ari"])
    return out


def baselines() -> dict:
    import scanpy as sc
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestNeighbors

    import kbfm

    kbfm.settings.progress = False
    adata = load()
    logn = adata.copy()
    sc.pp.log1p(logn)
    sc.pp.highly_variable_genes(logn, n_top_genes=2000, flavor="seurat")
    pca = PCA(30, random_state=0).fit_transform(logn[:, logn.var["highly_variable"]].X.toarray())
    adata.obsm["X_pca"] = pca
    idx = (
        NearestNeighbors(n_neighbors=7).fit(adata.obsm["spatial"]).kneighbors(return_distance=False)
    )
    adata.obsm["X_pca_smooth"] = pca[idx].mean(1)
    rows = {
        "expression PCA (log1p, 2000 HVG, PCA 30)": ari_over_seeds(adata, "X_pca"),
        "PCA averaged over the 6 nearest spots": ari_over_seeds(adata, "X_pca_smooth"),
    }
    kbfm.tl.embed_cells(logn, source=str(REFSEQ), weighting="relative")
    gt = PCA(30, random_state=0).fit_transform(logn.obsm["X_genetext"])
    adata.obsm["X_genept"] = gt
    rows["GenePT-w alone (RefSeq summaries, relative weights, PCA 30)"] = ari_over_seeds(
        adata, "X_genept"
    )
    z = lambda m: (m - m.mean(0)) / (m.std(0) + 1e-9)  # noqa: E731
    adata.obsm["X_concat"] = np.hstack([z(pca), z(gt)])
    rows["concatenation of PCA and GenePT-w (spEMO-style)"] = ari_over_seeds(adata, "X_concat")
    return rows


def fusion(preset: str, hops: int) -> dict:
    import kbfm
    from kbfm.models import FusionModel

    kbfm.settings.progress = False
    adata = load()
    aris, seconds, epochs = [], [], []
    for s in SEEDS:
        t = time.perf_counter()
        model = FusionModel.setup(adata, preset=preset, seed=s, graph_hops=hops).train()
        seconds.append(time.perf_counter() - t)
        epochs.append(len(model.history))
        adata.obsm["X_kbfm"] = model.get_latent_representation()
        kbfm.tl.domains(adata, n_domains=7, seed=s, key_added="d")
        aris.append(kbfm.tl.evaluate_domains(adata, LABEL, key="d")["ari"])
    return {
        "aris": aris,
        "train_seconds_median": float(np.median(seconds)),
        "epochs_median": float(np.median(epochs)),
        "parameters": model.n_parameters(),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def main() -> None:
    rows = {label: {"aris": a} for label, a in baselines().items()}
    ctx = mp.get_context("spawn")
    for preset, hops in (("tiny", 2), ("base", 2), ("large", 2), ("base", 4)):
        with ctx.Pool(1) as pool:
            res = pool.apply(fusion, (preset, hops))
        rows[f"FusionModel {preset} (graph_hops={hops})"] = res
    for r in rows.values():
        r["median_ari"] = float(np.median(r["aris"]))
    result = {
        "data": "DLPFC 151675, 3,566 annotated spots, 7 layers",
        "seeds": list(SEEDS),
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dlpfc_domains.json").write_text(json.dumps(result, indent=2))
    lines = [
        "| representation | median ARI (5 seeds) | min-max | train s (median) | params "
        "| peak RSS GiB |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in rows.items():
        extra = (
            f"{r['train_seconds_median']:.0f} | {r['parameters']:,} | {r['peak_rss_gib']:.2f}"
            if "parameters" in r
            else "— | — | —"
        )
        lines.append(
            f"| {label} | {r['median_ari']:.3f} | "
            f"{min(r['aris']):.3f}-{max(r['aris']):.3f} | {extra} |"
        )
    (RESULTS / "dlpfc_domains.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
