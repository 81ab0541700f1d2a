"""Imputation on DLPFC 151675 with FusionModel (base), two settings, baselines in the same run.

(a) Entry masking: 10% of the non-zero entries of the 2,000 most variable genes are set
    to zero before training; predictions for those entries are compared with the truth
    (Pearson r per gene across the masked spots, mean over genes). Baselines: the same
    gene averaged over the 6 nearest spots (unmasked values), and kNN (k = 10) in
    expression PCA space.
(b) Unmeasured genes: 10% of those genes are removed before training and predicted only
    through their text embedding (RefSeq summaries, MiniLM). Pearson r per gene across all
    spots. Baseline: copy the measured gene whose text embedding is most similar.

Run: HF_HUB_OFFLINE=1 python benchmarks/imputation.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from _data import DATA_ROOT

ROOT = DATA_ROOT
DATA = ROOT / "spatial/dlpfc_151675/dlpfc_151675.h5ad"
REFSEQ = str(ROOT / "genes/refseq_summaries_human.tsv.gz")
RESULTS = Path(__file__).parent / "results"


def pearson_per_gene(truth: np.ndarray, pred: np.ndarray, mask: np.ndarray | None = None) -> float:
    rs = []
    for j in range(truth.shape[1]):
        sel = mask[:, j] if mask is not None else slice(None)
        t, p = truth[sel, j], pred[sel, j]
        if len(t) > 5 and t.std() > 0 and p.std() > 0:
            rs.append(np.corrcoef(t, p)[0, 1])
    return float(np.mean(rs)) if rs else float("nan")


def main() -> None:
    import anndata as ad
    import scanpy as sc
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestNeighbors

    import kbfm
    from kbfm.knowledge._gene_vectors import gene_vectors
    from kbfm.models import FusionModel

    kbfm.settings.progress = False
    rng = np.random.default_rng(0)
    adata = ad.read_h5ad(DATA)
    sc.pp.log1p(adata)
    sc.pp.highly_variable_genes(adata, n_top_genes=2000, flavor="seurat")
    adata = adata[:, adata.var["highly_variable"]].copy()
    gv = gene_vectors(list(adata.var_names), source=REFSEQ)
    adata = adata[:, gv.has_knowledge].copy()  # genes with knowledge, so (b) is possible
    truth = adata.X.toarray().astype(np.float32)
    coords = np.asarray(adata.obsm["spatial"], float)
    results: dict = {"n_spots": adata.n_obs, "n_genes": adata.n_vars}

    # (a) entry masking
    nz = np.argwhere(truth > 0)
    hidden = nz[rng.choice(len(nz), size=len(nz) // 10, replace=False)]
    mask = np.zeros_like(truth, dtype=bool)
    mask[hidden[:, 0], hidden[:, 1]] = True
    masked = adata.copy()
    masked.X = np.where(mask, 0.0, truth).astype(np.float32)
    model = FusionModel.setup(
        masked, preset="base", n_top_genes=masked.n_vars, knowledge_source=REFSEQ, seed=0
    ).train()
    kbfm.tl.impute(masked, model, genes=list(masked.var_names))
    fusion = masked.obsm["kbfm_imputed"].to_numpy()
    idx = NearestNeighbors(n_neighbors=7).fit(coords).kneighbors(return_distance=False)[:, 1:]
    observed = np.where(mask, np.nan, truth)
    spatial_avg = np.nan_to_num(np.nanmean(observed[idx], axis=1))
    pcs = PCA(30, random_state=0).fit_transform(masked.X)
    knn = NearestNeighbors(n_neighbors=11).fit(pcs).kneighbors(return_distance=False)[:, 1:]
    knn_avg = np.nan_to_num(np.nanmean(observed[knn], axis=1))
    results["entry_masking"] = {
        "FusionModel base": pearson_per_gene(truth, fusion, mask),
        "spatial neighbour average (6 nearest spots)": pearson_per_gene(truth, spatial_avg, mask),
        "kNN in expression PCA space (k=10)": pearson_per_gene(truth, knn_avg, mask),
    }

    # (b) unmeasured genes
    n_out = adata.n_vars // 10
    out_idx = rng.choice(adata.n_vars, size=n_out, replace=False)
    keep_idx = np.setdiff1d(np.arange(adata.n_vars), out_idx)
    train = adata[:, keep_idx].copy()
    model = FusionModel.setup(
        train, preset="base", n_top_genes=train.n_vars, knowledge_source=REFSEQ, seed=0
    ).train()
    withheld = list(adata.var_names[out_idx])
    kbfm.tl.impute(train, model, genes=withheld)
    pred = train.obsm["kbfm_imputed"].to_numpy()
    text = gv.matrix[gv.has_knowledge]
    sims = text[out_idx] @ text[keep_idx].T
    nearest = keep_idx[np.argmax(sims, axis=1)]
    results["unmeasured_genes"] = {
        "n_withheld": n_out,
        "FusionModel base (text-conditioned decoder)": pearson_per_gene(truth[:, out_idx], pred),
        "copy the most text-similar measured gene": pearson_per_gene(
            truth[:, out_idx], truth[:, nearest]
        ),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "imputation.json").write_text(json.dumps(results, indent=2))
    lines = ["| setting | method | mean Pearson r per gene |", "|---|---|---|"]
    for setting in ("entry_masking", "unmeasured_genes"):
        for method, r in results[setting].items():
            if method != "n_withheld":
                lines.append(f"| {setting} | {method} | {r:.3f} |")
    (RESULTS / "imputation.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
