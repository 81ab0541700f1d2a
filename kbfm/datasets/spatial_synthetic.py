"""Generated spatial data with layered domains, for tests and examples."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData


def synthetic_spatial(
    *,
    n_side: int = 30,
    n_domains: int = 4,
    n_genes: int = 120,
    markers_per_domain: int = 8,
    noise: float = 1.0,
    gene_names: list[str] | None = None,
    seed: int = 0,
) -> AnnData:
    """Spots on a square grid, split into horizontal bands (domains) with marker genes.

    Parameters
    ----------
    n_side
        Grid side; ``n_side**2`` spots.
    n_domains
        Number of bands.
    n_genes
        Genes; the first ``n_domains * markers_per_domain`` are domain markers.
    markers_per_domain
        Marker genes per domain (over-expressed 4x there).
    noise
        Poisson library-size spread (log-normal sigma x 0.3).
    gene_names
        Names for the genes (default ``GENE0``...).
    seed
        Random seed.

    Returns
    -------
    Counts in ``X``, ``obs["domain"]``, ``obsm["spatial"]``.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.arange(n_side), np.arange(n_side), indexing="ij")
    coords = np.column_stack([xx.ravel(), yy.ravel()]).astype(float) * 100.0
    domain = np.minimum(yy.ravel() * n_domains // n_side, n_domains - 1)
    mu = np.full((len(coords), n_genes), 2.0)
    for d in range(n_domains):
        genes = slice(d * markers_per_domain, (d + 1) * markers_per_domain)
        mu[domain == d, genes] *= 4.0
    library = rng.lognormal(0.0, 0.3 * noise, size=(len(coords), 1))
    X = rng.poisson(mu * library).astype(np.float32)
    names = gene_names or [f"GENE{i}" for i in range(n_genes)]
    obs = pd.DataFrame(
        {"domain": pd.Categorical(domain.astype(str))},
        index=[f"spot{i}" for i in range(len(coords))],
    )
    return AnnData(X, obs=obs, var=pd.DataFrame(index=names[:n_genes]), obsm={"spatial": coords})
