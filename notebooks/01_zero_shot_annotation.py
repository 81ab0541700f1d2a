# %% [markdown]
# # Zero-shot cell-type annotation with kbfm
#
# A tutorial in the percent format (open it in Jupyter with jupytext, or run it as a
# script: `python notebooks/01_zero_shot_annotation.py`). Everything runs offline.
#
# 1. Load scanpy's labelled PBMCs.
# 2. Embed gene knowledge and cells in one text space (GenePT-w).
# 3. Annotate clusters zero-shot against the Cell Ontology and compare with marker scoring.
# 4. Query cells with free text.

# %%
import kbfm

adata = kbfm.datasets.pbmc68k_reduced()
adata

# %% [markdown]
# Gene knowledge -> text embeddings. `source="builtin"` uses kbfm's curated marker facts;
# pass `source="ncbi"` (after `kbfm knowledge download ncbi`) or a GenePT JSON for all
# genes, and a bigger encoder for stronger embeddings.

# %%
kbfm.tl.embed_genes(adata, source="builtin", encoder="minilm")
print(adata.var["kbfm_has_knowledge"].sum(), "genes have knowledge")
kbfm.tl.embed_cells(adata, weighting="relative")
adata.obsm["X_genetext"].shape

# %% [markdown]
# Zero-shot annotation of Leiden clusters, candidates restricted to blood cell types.

# %%
kbfm.tl.annotate(adata, candidates="hematopoietic cell", groupby="auto")
kbfm.tl.annotate(adata, method="marker_score", candidates="hematopoietic cell", key_added="marker")
truth = adata.obs["cell_type_id"].astype(str)
for key in ("kbfm_celltype", "marker"):
    scores = kbfm.tl.evaluate_annotation(truth, adata.obs[f"{key}_id"].astype(str))
    print(f"{key:14s} accuracy {scores['accuracy']:.3f} macro-F1 {scores['macro_f1']:.3f}")

# %% [markdown]
# Which cells look like "natural killer cell"? The query blends the text with the
# marker knowledge of the matching Cell Ontology term.

# %%
kbfm.tl.query(adata, "natural killer cell", key_added="nk_like")
top = adata.obs.sort_values("nk_like", ascending=False).head(20)
print(top["cell_type"].value_counts().head(3))
