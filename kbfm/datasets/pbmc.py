"""scanpy's bundled ``pbmc68k_reduced`` (real, labelled) with Cell Ontology truth ids."""

from __future__ import annotations

from anndata import AnnData

# Our mapping of the sorted-population labels of Zheng et al. 2017 (bulk_labels) onto
# Cell Ontology terms. "Dendritic" in this set is a sorted population known to be mixed.
PBMC68K_LABEL_TO_CL: dict[str, str] = {
    "CD14+ Monocyte": "CL:0001054",  # CD14-positive monocyte
    "CD19+ B": "CL:0000236",  # B cell
    "CD34+": "CL:0008001",  # hematopoietic precursor cell
    "CD4+/CD25 T Reg": "CL:0000815",  # regulatory T cell
    "CD4+/CD45RA+/CD25- Naive T": "CL:0000895",  # naive thymus-derived CD4+ ab T cell
    "CD4+/CD45RO+ Memory": "CL:0000897",  # CD4-positive, alpha-beta memory T cell
    "CD56+ NK": "CL:0000623",  # natural killer cell
    "CD8+ Cytotoxic T": "CL:0000794",  # CD8-positive, alpha-beta cytotoxic T cell
    "CD8+/CD45RA+ Naive Cytotoxic": "CL:0000900",  # naive thymus-derived CD8+ ab T cell
    "Dendritic": "CL:0000451",  # dendritic cell
}


def pbmc68k_reduced() -> AnnData:
    """Return scanpy's ``pbmc68k_reduced`` ready for kbfm (700 cells, 765 genes).

    ``X`` holds the log-normalised values from ``raw`` (the shipped ``X`` is scaled and
    has negative values). ``obs["cell_type"]`` is the sorted-population label and
    ``obs["cell_type_id"]`` its Cell Ontology id (:data:`PBMC68K_LABEL_TO_CL`).

    Returns
    -------
    The AnnData (loaded from the scanpy package, no download).
    """
    import scanpy as sc

    shipped = sc.datasets.pbmc68k_reduced()
    adata = shipped.raw.to_adata()
    adata.obs = shipped.obs[["bulk_labels", "louvain"]].rename(columns={"bulk_labels": "cell_type"})
    adata.obs["cell_type_id"] = adata.obs["cell_type"].map(PBMC68K_LABEL_TO_CL).astype("category")
    adata.obsm["X_umap"] = shipped.obsm["X_umap"]
    adata.obsm["X_pca"] = shipped.obsm["X_pca"]
    return adata
