"""Spatial domains on DLPFC 151675: baselines vs GenePT-w vs concatenation vs FusionModel.

Protocol: unannotated spots dropped, k = 7 (the annotated layers), Gaussian mixture,
median ARI over 5 seeds (seed = model seed = mixture seed); never the best of many runs.
Every representation is clustered two ways on the same embedding, both with 10 mixture
restarts (best likelihood kept): kbfm.tl.domains' default (a tied-covariance mixture, the
analogue of mclust EEE used by GraphST and STAGATE) and a full-covariance mixture.
Each FusionModel configuration trains in its own process so its peak memory is measured
alone.

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


CLUSTERINGS = {
    "default": {},
    "full": {"covariance": "full"},
}


def ari(adata, rep: str, seed: int, clustering: str) -> float:
    import kbfm

    kwargs = CLUSTERINGS[clustering]
    kbfm.tl.domains(adata, n_domains=7, use_rep=rep, seed=seed, key_added="d", **kwargs)
    return kbfm.tl.evaluate_domains(adata, LABEL, key="d")["ari"]


def ari_over_seeds(adata, rep: str) -> dict[str, list[float]]:
    return {c: [ari(adata, rep, s, c) for s in SEEDS] for c in CLUSTERINGS}


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
    kbfm.pp.spatially_variable_genes(logn, n_top_genes=2000)
    svg = logn[:, logn.var["kbfm_spatially_variable"]].X.toarray()
    adata.obsm["X_svg_pca"] = PCA(30, random_state=0).fit_transform(svg)
    adata.obsm["X_svg_pca_smooth"] = adata.obsm["X_svg_pca"][idx].mean(1)
    rows = {
        "expression PCA (log1p, 2000 HVG, PCA 30)": ari_over_seeds(adata, "X_pca"),
        "PCA averaged over the 6 nearest spots": ari_over_seeds(adata, "X_pca_smooth"),
        "PCA of 2000 spatially variable genes (Moran's I)": ari_over_seeds(adata, "X_svg_pca"),
        "  same, averaged over the 6 nearest spots": ari_over_seeds(adata, "X_svg_pca_smooth"),
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


def fusion(preset: str, gene_selection: str) -> dict:
    import kbfm
    from kbfm.models import FusionModel

    kbfm.settings.progress = False
    adata = load()
    aris: dict[str, list[float]] = {c: [] for c in CLUSTERINGS}
    seconds, epochs = [], []
    for s in SEEDS:
        t = time.perf_counter()
        model = FusionModel.setup(adata, preset=preset, seed=s, gene_selection=gene_selection)
        model.train()
        seconds.append(time.perf_counter() - t)
        epochs.append(len(model.history))
        adata.obsm["X_kbfm"] = model.get_latent_representation()
        for c in CLUSTERINGS:
            aris[c].append(ari(adata, "X_kbfm", s, c))
    return {
        "aris": aris,
        "train_seconds_median": float(np.median(seconds)),
        "epochs_median": float(np.median(epochs)),
        "parameters": model.n_parameters(),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def main() -> None:
    rows = {label: {"aris": a} for label, a in baselines().items()}
    print("baselines done", flush=True)
    ctx = mp.get_context("spawn")
    configs = (("tiny", "spatial"), ("base", "spatial"), ("large", "spatial"), ("base", "hvg"))
    for preset, genes in configs:
        with ctx.Pool(1) as pool:
            res = pool.apply(fusion, (preset, genes))
        label = f"FusionModel {preset}" + (
            " (2000 HVG instead of spatial genes)" * (genes == "hvg")
        )
        rows[label] = res
    for r in rows.values():
        r["median_ari"] = {c: float(np.median(v)) for c, v in r["aris"].items()}
    result = {
        "data": "DLPFC 151675, 3,566 annotated spots, 7 layers",
        "seeds": list(SEEDS),
        "clusterings": {
            "default": "kbfm.tl.domains default: tied-covariance mixture, 10 restarts",
            "full": "full-covariance mixture, 10 restarts",
        },
        "command": "python benchmarks/dlpfc_domains.py",
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dlpfc_domains.json").write_text(json.dumps(result, indent=2))
    lines = [
        "| representation | median ARI (default: tied mixture) | min-max "
        "| median ARI, full-covariance mixture | train s (median) | params | peak RSS GiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, r in rows.items():
        extra = (
            f"{r['train_seconds_median']:.0f} | {r['parameters']:,} | {r['peak_rss_gib']:.2f}"
            if "parameters" in r
            else "— | — | —"
        )
        d = r["aris"]["default"]
        lines.append(
            f"| {label.strip()} | **{r['median_ari']['default']:.3f}** | "
            f"{min(d):.3f}-{max(d):.3f} | {r['median_ari']['full']:.3f} | {extra} |"
        )
    (RESULTS / "dlpfc_domains.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
