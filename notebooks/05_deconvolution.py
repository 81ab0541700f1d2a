# %% [markdown]
# # Deconvolution: cell-type proportions per spot
#
# A human lymph node Visium section (1,000 spots, raw counts) and a labelled single-cell
# reference of the same tissue (330 cells, 11 types), both from the spacexr/RCTD example
# data in the shared data folder.
#
# 1. Reference-based: NNLS on the reference signatures (the baseline) and the negative
#    binomial count model (`method="poisson"`).
# 2. Zero-shot (`method="knowledge"` without a reference): marker knowledge of Cell
#    Ontology types replaces the reference.
# 3. Proportion maps with `kbfm.pl.proportions`.
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
import scanpy as sc

import kbfm

DATA = Path(os.environ.get("KBFM_DATA") or "../../shared/data")
OUT = Path(os.environ.get("KBFM_TUTORIAL_OUT") or tempfile.mkdtemp(prefix="kbfm_tutorial_"))
OUT = OUT / "05_deconvolution"
OUT.mkdir(parents=True, exist_ok=True)
print("figures ->", OUT)

adata = sc.read_h5ad(DATA / "deconv/spacexr/SpatialRNA/VisiumLymphVignette/visium_lymph.h5ad")
reference = sc.read_h5ad(DATA / "deconv/spacexr/Reference/Visium_Lymph_Ref/ref_downsampled.h5ad")
print(adata)
print(reference.obs["cell_type"].value_counts())

# %% [markdown]
# ## With a reference
#
# Both matrices hold raw counts, so proportions are fractions of cells. Genes are matched
# by name (then aliases, case); the report is in `uns["kbfm"]["deconvolve"]`.
# The count model's per-gene platform effects absorb differences between the single-cell
# and the Visium chemistry. `n_epochs=150` (default 1000) keeps this tutorial quick; use
# the default for real analyses.

# %%
kbfm.tl.deconvolve(adata, reference, label_key="cell_type", method="nnls", key_added="nnls")
kbfm.tl.deconvolve(adata, reference, label_key="cell_type", method="poisson", n_epochs=150)
P = adata.obsm["kbfm_proportions"]
print(P.mean().sort_values(ascending=False).round(3))
print(
    "NNLS vs count model, mean |difference|:", float(np.abs(P - adata.obsm["nnls"]).mean().mean())
)

# %% [markdown]
# ## Proportion maps
#
# One panel per cell type, each spot coloured by its estimated share.

# %%
fig = kbfm.pl.proportions(adata, spot_size=12)
fig.savefig(OUT / "proportions_reference.png", dpi=110, bbox_inches="tight")
plt.close(fig)

# %% [markdown]
# ## Zero-shot, from knowledge only
#
# Without a reference, give Cell Ontology names: their marker genes
# (`kbfm.knowledge.marker_sets`) make pseudo-signatures and the count model explains how
# each type's markers co-vary across spots. Useful when no matching single-cell data
# exists; expect coarser estimates than with a reference.

# %%
types = ["B cell", "T cell", "macrophage", "plasma cell", "endothelial cell", "dendritic cell"]
kbfm.tl.deconvolve(adata, method="knowledge", cell_types=types, n_epochs=150, key_added="zero_shot")
Z = adata.obsm["zero_shot"]
print(Z.mean().sort_values(ascending=False).round(3))
fig = kbfm.pl.proportions(adata, key="zero_shot", ncols=3, spot_size=12)
fig.savefig(OUT / "proportions_zero_shot.png", dpi=110, bbox_inches="tight")
plt.close(fig)

# %% [markdown]
# Agreement between the two routes on the B-cell share (the reference calls it `B`):

# %%
zero_b = Z[next(c for c in Z.columns if "B cell" in str(c))]
print(
    "Pearson r, B cell share (reference vs zero-shot):",
    round(float(np.corrcoef(P["B"], zero_b)[0, 1]), 3),
)
