"""Every AnnData key kbfm reads or writes, in one place.

Functions take these as defaults (``key_added=``, ``use_rep=``), so a user can always
choose other names; the constants say where kbfm puts things when nobody chooses.
"""

from __future__ import annotations

# uns
UNS_KEY = "kbfm"  #: provenance of every step (:func:`kbfm.provenance`)
SETUP_KEY = "_kbfm_fusion_setup"  #: FusionModel.setup_anndata's registration record

# var / varm (genes)
GENE_TEXT_KEY = "kbfm_gene_text"  #: varm: gene-knowledge text embedding per gene
HAS_KNOWLEDGE_KEY = "kbfm_has_knowledge"  #: var: the gene has a knowledge card
SYMBOL_KEY = "kbfm_symbol"  #: var: the gene symbol kbfm matched
MORANS_I_KEY = "kbfm_morans_i"  #: var: Moran's I of each gene
SVG_KEY = "kbfm_spatially_variable"  #: var: selected spatially variable genes

# obsm (spots / cells)
SPATIAL_KEY = "spatial"  #: obsm: full-resolution pixel coordinates (x, y); uns: images
CELL_TEXT_KEY = "X_genetext"  #: obsm: cell embedding in gene-knowledge text space
IMAGE_KEY = "X_image"  #: obsm: H&E patch embedding
LATENT_KEY = "X_kbfm"  #: obsm: FusionModel latent
IMPUTED_KEY = "kbfm_imputed"  #: obsm: imputed expression
PREDICTED_KEY = "kbfm_predicted_expression"  #: obsm: expression predicted from histology
RESULT_KEY = "kbfm_predict_expression"  #: uns: per-gene scores of that prediction

# obs
CELLTYPE_KEY = "kbfm_celltype"  #: obs: annotated cell type (+ _score, _id, ...)
AUTO_CLUSTER_KEY = "kbfm_clusters"  #: obs: clusters made when groupby="auto"
DOMAIN_KEY = "kbfm_domain"  #: obs: spatial domain

# obsp
GRAPH_KEY = "spatial_connectivities"  #: obsp: the spot graph (squidpy's key)
DISTANCES_KEY = "spatial_distances"  #: obsp: its distances

# uns["spatial"][library]["metadata"]
MPP_KEY = "microns_per_pixel"
SOURCE_IMAGE_KEY = "source_image_path"
