# %% [markdown]
# # Zero-shot annotation across tissues
#
# The same zero-shot call on three labelled data sets: scanpy's PBMCs (bundled), a human
# lymph node single-cell reference and a mouse hippocampus reference (both from the
# spacexr/RCTD example data in the shared data folder). For each we annotate Leiden
# clusters against the Cell Ontology, score the result with
# `kbfm.tl.evaluate_annotation` and draw a confusion matrix.
#
# Data folder: `$KBFM_DATA`, else `../../shared/data` (relative to this folder). Figures
# go to `$KBFM_TUTORIAL_OUT`, else a new temporary folder (printed below).

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
import scipy.sparse as sp
from anndata import AnnData

import kbfm

DATA = Path(os.environ.get("KBFM_DATA") or "../../shared/data")
OUT = Path(os.environ.get("KBFM_TUTORIAL_OUT") or tempfile.mkdtemp(prefix="kbfm_tutorial_"))
OUT = OUT / "02_annotation_tissues"
OUT.mkdir(parents=True, exist_ok=True)
print("figures ->", OUT)

# %% [markdown]
# ## Loading the three data sets
#
# `evaluate_annotation` compares Cell Ontology ids, so the authors' labels are mapped to
# CL ids first (a curated dict; `kbfm.knowledge.CellOntology.load().lookup(...)` helps).
# Every matrix is log-normalised, as scanpy would.

# %%
LYMPH_TO_CL = {
    "B": "CL:0000236", "B_Plasma": "CL:0000786", "DC": "CL:0000451",
    "Endo": "CL:0000115", "ILC": "CL:0001065", "Macrophages": "CL:0000235",
    "Monocytes": "CL:0000576", "NK": "CL:0000623", "T_CD4": "CL:0000624",
    "T_CD8": "CL:0000625", "VSMC": "CL:0000359",
}  # fmt: skip
HIPPOCAMPUS_TO_CL = {
    "Astrocyte": "CL:0002604", "CA1": "CL:1001571", "CA3": "CL:1001571",
    "Cajal_Retzius": "CL:0000695", "Choroid": "CL:0000706", "Denate": "CL:2000089",
    "Endothelial_Stalk": "CL:0002671", "Endothelial_Tip": "CL:0000704",
    "Entorihinal": "CL:0010012", "Ependymal": "CL:0000065", "Interneuron": "CL:1001569",
    "Microglia_Macrophages": "CL:0000129", "Mural": "CL:0008034",
    "Neurogenesis": "CL:1000042", "Neuron.Slc17a6": "CL:0000679",
    "Oligodendrocyte": "CL:0000128", "Polydendrocyte": "CL:0002453",
}  # fmt: skip


def log_normalise(adata):
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    return adata


def lymph_node():
    adata = sc.read_h5ad(DATA / "deconv/spacexr/Reference/Visium_Lymph_Ref/ref_downsampled.h5ad")
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    adata.obs["cell_type_id"] = adata.obs["cell_type"].astype(str).map(LYMPH_TO_CL)
    return log_normalise(adata)


def hippocampus():
    folder = DATA / "deconv/spacexr/Reference/Visium_Ref"
    counts = pd.read_csv(folder / "counts.csv", index_col=0)  # genes x cells
    labels = pd.read_csv(folder / "cell_types.csv", index_col=0)["x"].astype(str)
    adata = AnnData(sp.csr_matrix(counts.to_numpy().T.astype(np.float32)))
    adata.obs_names, adata.var_names = counts.columns.astype(str), counts.index.astype(str)
    adata.obs["cell_type"] = labels.reindex(adata.obs_names).to_numpy()
    adata.obs["cell_type_id"] = adata.obs["cell_type"].map(HIPPOCAMPUS_TO_CL)
    return log_normalise(adata)


pbmc = kbfm.datasets.pbmc68k_reduced()
sets = {
    "pbmc": (pbmc, "blood", "hematopoietic cell"),
    "lymph_node": (lymph_node(), "lymph node", None),
    "mouse_hippocampus": (hippocampus(), "hippocampus", None),
}
for name, (a, _, _) in sets.items():
    print(
        f"{name:18s} {a.n_obs:4d} cells x {a.n_vars:5d} genes, {a.obs['cell_type'].nunique()} types"
    )

# %% [markdown]
# ## Zero-shot annotation
#
# `embed_genes` turns gene knowledge into text embeddings. `source="builtin"` (kbfm's
# curated marker facts) keeps this tutorial fast; the default `"atlas"` source has a card
# for every human and mouse gene and is stronger but embeds every gene once (minutes on a
# laptop; cached afterwards); `embed_cells` places each cell in that space
# (GenePT-w); `annotate` compares Leiden clusters with Cell Ontology terms. The species is
# read off the gene names (mouse symbols use mouse cards and markers). Candidates come from
# the tissue word (`tissue=`) or an ontology branch. `annotate` builds its cell-type
# prototypes from its own `source=` (default `"atlas"`), so pass the same source there.

# %%
results = {}
for name, (a, tissue, branch) in sets.items():
    kbfm.tl.embed_genes(a, source="builtin", encoder="minilm")
    kbfm.tl.embed_cells(a, weighting="relative")
    if branch is not None:
        kbfm.tl.annotate(a, candidates=branch, groupby="auto", source="builtin")
    else:
        kbfm.tl.annotate(a, tissue=tissue, groupby="auto", source="builtin")
    scores = kbfm.tl.evaluate_annotation(a.obs["cell_type_id"], a.obs["kbfm_celltype_id"])
    results[name] = scores
    n_cand = len(a.uns["kbfm"]["annotate"]["candidates"])
    print(
        f"{name:18s} {n_cand:4d} candidates  accuracy {scores['accuracy']:.3f}  "
        f"macro-F1 {scores['macro_f1']:.3f}  ontology-aware {scores['ontology_accuracy']:.3f}"
    )
pd.DataFrame(results).T[["accuracy", "macro_f1", "ontology_accuracy", "n"]]

# %% [markdown]
# `ontology_accuracy` gives half credit when the prediction is an ancestor or descendant
# of the truth (e.g. "T cell" for "CD4-positive, alpha-beta T cell"), the GPTCelltype
# full/partial scheme.
#
# ## Confusion matrices
#
# Rows: the authors' labels; columns: kbfm's predicted Cell Ontology labels; each row
# sums to 1.

# %%
fig, axes = plt.subplots(1, len(sets), figsize=(7 * len(sets), 6.5))
for ax, (name, (a, _, _)) in zip(axes, sets.items(), strict=True):
    table = pd.crosstab(a.obs["cell_type"].astype(str), a.obs["kbfm_celltype"].astype(str))
    table = table.div(table.sum(axis=1), axis=0)
    ax.imshow(table.to_numpy(), cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(table.shape[1]), table.columns, rotation=70, ha="right", fontsize=7)
    ax.set_yticks(range(table.shape[0]), table.index, fontsize=7)
    ax.set_title(f"{name}: accuracy {results[name]['accuracy']:.2f}")
    ax.set_ylabel("truth")
    ax.set_xlabel("kbfm zero-shot")
fig.tight_layout()
fig.savefig(OUT / "confusion_matrices.png", dpi=110)
plt.close(fig)

# %% [markdown]
# ## A user's view: clusters and their terms
#
# The table a user checks first: each cluster, the term it got, the score, and the most
# common true label inside it. Provenance (encoder, knowledge source, candidates) is in
# `adata.uns["kbfm"]`.

# %%
adata = sets["lymph_node"][0]
summary = (
    adata.obs.groupby("kbfm_clusters", observed=True)
    .agg(
        term=("kbfm_celltype", "first"),
        score=("kbfm_celltype_score", "mean"),
        truth=("cell_type", lambda s: s.value_counts().index[0]),
        n=("cell_type", "size"),
    )
    .sort_values("n", ascending=False)
)
print(summary)
print(adata.uns["kbfm"]["annotate"]["encoder"], len(adata.uns["kbfm"]["history"]), "steps")
sc.pp.neighbors(adata, use_rep="X_genetext")
sc.tl.umap(adata)
sc.pl.umap(adata, color=["cell_type", "kbfm_celltype"], show=False, wspace=0.6)
plt.savefig(OUT / "lymph_node_umap.png", dpi=110, bbox_inches="tight")
plt.close("all")
