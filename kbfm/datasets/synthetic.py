"""Generated expression data with a known cell-type structure, for tests and examples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData


def synthetic_expression(
    markers: dict[str, list[str]],
    *,
    n_cells_per_type: int = 50,
    n_background_genes: int = 100,
    marker_fold: float = 8.0,
    seed: int = 0,
    sparse: bool = True,
) -> AnnData:
    """Simulate counts where each cell type over-expresses its own marker genes.

    Parameters
    ----------
    markers
        Cell-type label (or CL id) -> marker gene symbols.
    n_cells_per_type
        Cells per type.
    n_background_genes
        Extra genes named ``GENE0``... with the same mean in every type.
    marker_fold
        Fold change of a type's markers in that type.
    seed
        Random seed.
    sparse
        Store ``X`` as CSR.

    Returns
    -------
    AnnData with integer counts, ``obs["cell_type"]`` and ``var_names`` = all genes.
    """
    rng = np.random.default_rng(seed)
    genes = sorted({g for gs in markers.values() for g in gs})
    genes += [f"GENE{i}" for i in range(n_background_genes)]
    index = {g: i for i, g in enumerate(genes)}
    blocks, labels = [], []
    for label, gs in markers.items():
        mu = np.full(len(genes), 1.0)
        mu[[index[g] for g in gs]] *= marker_fold
        library = rng.lognormal(0.0, 0.3, size=(n_cells_per_type, 1))
        blocks.append(rng.poisson(mu * library))
        labels += [label] * n_cells_per_type
    X = np.vstack(blocks).astype(np.float32)
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical(labels)}, index=[f"cell{i}" for i in range(len(labels))]
    )
    return AnnData(sp.csr_matrix(X) if sparse else X, obs=obs, var=pd.DataFrame(index=genes))
