# %% [markdown]
# # Expression from histology (HER2ST)
#
# Two sections of a HER2-positive breast tumour (legacy Spatial Transcriptomics: H&E JPEG,
# raw spot counts, spot pixel centres) from the shared data folder.
#
# 1. Read each section with `kbfm.io.read_legacy_st`.
# 2. Embed the H&E around every spot (`kbfm.im.embed_image`, the fast `"color-texture"`
#    features; the default `efficientnet_lite0` network or a pathology model such as UNI
#    is the same call with `model=`).
# 3. Fit an image -> expression predictor on one section, predict the other, and score each
#    gene by its Pearson r against the measured expression.
#
# Data folder: `$KBFM_DATA`, else `../../shared/data`. Figures go to
# `$KBFM_TUTORIAL_OUT`, else a new temporary folder (printed below).

# %%
import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc

import kbfm
from kbfm.io.legacy_st import read_legacy_st
from kbfm.im.embed_image import embed_image
from kbfm.im.predict_expression import fit_expression_predictor

DATA = Path(os.environ.get("KBFM_DATA") or "../../shared/data")
HER2ST = DATA / "histology" / "her2st"
OUT = Path(os.environ.get("KBFM_TUTORIAL_OUT") or tempfile.mkdtemp(prefix="kbfm_tutorial_"))
OUT = OUT / "03_histology_expression"
OUT.mkdir(parents=True, exist_ok=True)
print("figures ->", OUT)


def read_section(name):
    image = next((HER2ST / "imgs").glob(f"{name}_*.jpg"))
    return read_legacy_st(
        HER2ST / f"cnts/{name}.tsv.gz", HER2ST / f"spots/{name}_selection.tsv", image
    )


train, test = read_section("C2"), read_section("C3")
print(train)

# %% [markdown]
# The reader fits the microns per pixel from the 200 µm spot grid and stores the image
# under `uns["spatial"]`, so spots can be drawn over the tissue.

# %%
ax = kbfm.pl.spatial_scatter(train, "ERBB2")
ax.figure.savefig(OUT / "C2_ERBB2_measured.png", dpi=110, bbox_inches="tight")
plt.close(ax.figure)

# %% [markdown]
# ## Embed the H&E around each spot
#
# Patches are 224 px at 0.5 µm/px (112 µm, the HEST-Benchmark field) centred on each
# spot; the colour/texture model summarises colour histograms, H&E optical density and
# texture in 84 numbers. Results are cached on disk, so a second run is instant.

# %%
for section in (train, test):
    embed_image(section, model="color-texture")
print(train.obsm["X_image"].shape, "tissue fraction (median):",
      round(float(train.obs["kbfm_image_tissue_fraction"].median()), 2))  # fmt: skip

# %% [markdown]
# ## Fit on C2, predict C3
#
# `fit_expression_predictor` follows the HEST protocol: the 50 most variable genes
# (log1p counts per 10k), PCA of the embeddings, ridge regression. `.predict` needs only
# the image embedding of the new section; predictions land in
# `obsm["kbfm_predicted_expression"]`.

# %%
predictor = fit_expression_predictor(train, n_genes=50)
predictor.predict(test)
predicted = test.obsm["kbfm_predicted_expression"]
genes = list(predicted.columns)

measured = test[:, genes].copy()
sc.pp.normalize_total(measured, target_sum=1e4)
sc.pp.log1p(measured)
X = measured.X.toarray() if hasattr(measured.X, "toarray") else np.asarray(measured.X)
r = pd.Series(
    [
        np.corrcoef(X[:, i], predicted[g])[0, 1] if X[:, i].std() > 0 else np.nan
        for i, g in enumerate(genes)
    ],
    index=genes,
).sort_values(ascending=False)
print(f"mean Pearson r over {len(genes)} genes: {r.mean():.3f}")
print(r.head(10).round(3))

# %% [markdown]
# ## Per-gene Pearson r
#
# Serial sections of one patient, so this split is optimistic; the leave-one-section-out
# benchmark over all four sections is in `benchmarks/results/image_expression.md`
# (`kbfm.im.predict_expression(adata, groupby="section")` runs it in one call).

# %%
fig, ax = plt.subplots(figsize=(12, 4))
ax.bar(range(len(r)), r.to_numpy(), color=np.where(r.to_numpy() > 0, "tab:blue", "tab:gray"))
ax.set_xticks(range(len(r)), r.index, rotation=90, fontsize=7)
ax.axhline(r.mean(), color="tab:red", lw=1, label=f"mean r = {r.mean():.2f}")
ax.set_ylabel("Pearson r (C3, trained on C2)")
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "per_gene_pearson.png", dpi=110)
plt.close(fig)

# %% [markdown]
# The best-predicted gene, measured and predicted, over the H&E of C3:

# %%
best = r.index[0]
test.obs[f"{best} measured"] = X[:, genes.index(best)]
fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
kbfm.pl.spatial_scatter(test, f"{best} measured", ax=axes[0])
kbfm.pl.spatial_scatter(test, f"kbfm_predicted_expression:{best}", ax=axes[1])
fig.tight_layout()
fig.savefig(OUT / f"C3_{best}_measured_vs_predicted.png", dpi=110)
plt.close(fig)
adata = test
