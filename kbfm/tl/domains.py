"""``kbfm.tl.domains``: spatial domains / niches from a representation; ARI and NMI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._errors import KbfmInputError
from .._keys import DOMAIN_KEY, LATENT_KEY
from .._provenance import record_step
from .._spatial_graph import kneighbors
from ..io._spatial import spatial_coords


def smooth_labels(labels: np.ndarray, coords: np.ndarray, n_neighbors: int = 6) -> np.ndarray:
    """Replace each label by the majority among the spot and its spatial neighbours.

    Parameters
    ----------
    labels
        One label per spot.
    coords
        Spot positions (``n_spots x n_dims``).
    n_neighbors
        Nearest spots voting with the spot itself (ties: the label seen first wins).

    Returns
    -------
    The smoothed labels (same dtype as the unique labels).
    """
    _, idx = kneighbors(coords, n_neighbors, include_self=True)
    codes, uniques = pd.factorize(pd.Series(labels))
    votes = codes[idx]
    out = np.array([np.bincount(row, minlength=len(uniques)).argmax() for row in votes])
    return np.asarray(uniques)[out]


def domains(
    adata: AnnData,
    *,
    n_domains: int,
    use_rep: str = LATENT_KEY,
    method: str = "gmm",
    n_pcs: int | None = None,
    covariance: str = "tied",
    n_init: int = 10,
    smooth: bool = False,
    n_neighbors: int = 6,
    seed: int = 0,
    key_added: str = DOMAIN_KEY,
    copy: bool = False,
) -> AnnData | None:
    """Cluster spots into ``n_domains`` spatial domains.

    Parameters
    ----------
    adata
        Data with ``obsm[use_rep]``.
    n_domains
        Number of domains (for benchmarks: the number of annotated layers, fixed).
    use_rep
        Representation, e.g. ``"X_kbfm"``, ``"X_pca"`` or ``"X_genetext"``.
    method
        ``"gmm"`` (Gaussian mixture) or ``"kmeans"``.
    n_pcs
        Reduce a wider representation to this many principal components first
        (``None``, the default, clusters it as is; GraphST's recipe uses 20).
    covariance
        Mixture covariance: ``"tied"`` (default: one covariance shared by all domains, the
        analogue of mclust's ``EEE`` model used by GraphST and STAGATE), ``"full"``,
        ``"diag"`` or ``"spherical"``. On DLPFC, tied is better for ``X_kbfm`` and for
        neighbour-averaged representations, full for plain expression PCA
        (``benchmarks/RESULTS.md``).
    n_init
        Restarts of the mixture (or k-means); the fit with the highest likelihood is kept.
    smooth
        Majority vote of each spot's label with its ``n_neighbors`` spatial neighbours.
    n_neighbors
        Neighbours for smoothing.
    seed
        Random seed.
    key_added
        ``obs`` column written.
    copy
        Return a modified copy.

    Returns
    -------
    ``None`` or the copy; writes ``obs[key_added]`` (categorical).
    """
    from sklearn.cluster import KMeans
    from sklearn.mixture import GaussianMixture

    if use_rep not in adata.obsm:
        msg = f"obsm[{use_rep!r}] not found; available: {list(adata.obsm)}."
        raise KbfmInputError(msg)
    if not 2 <= n_domains < adata.n_obs:
        msg = f"n_domains must be between 2 and the number of spots, got {n_domains}."
        raise KbfmInputError(msg)
    if smooth and "spatial" not in adata.obsm:
        msg = "smooth=True needs obsm['spatial']."
        raise KbfmInputError(msg)
    coords = spatial_coords(adata) if smooth else None  # shape and NaN checked, key named
    raw = adata.obsm[use_rep]
    rep = raw.toarray() if sp.issparse(raw) else raw
    try:
        rep = np.asarray(rep, dtype=np.float64)
    except (TypeError, ValueError):
        msg = f"obsm[{use_rep!r}] must be a numeric matrix (spots x features)."
        raise KbfmInputError(msg) from None
    if rep.ndim != 2 or rep.shape[1] == 0:
        msg = f"obsm[{use_rep!r}] must have at least one feature column, got shape {rep.shape}."
        raise KbfmInputError(msg)
    if n_pcs is not None and n_pcs < 1:
        msg = f"n_pcs must be at least 1 (or None for all features), got {n_pcs}."
        raise KbfmInputError(msg)
    if not np.isfinite(rep).all():
        msg = f"obsm[{use_rep!r}] holds NaN or infinite values."
        raise KbfmInputError(msg)
    if covariance not in ("tied", "full", "diag", "spherical"):
        msg = f"covariance must be 'tied', 'full', 'diag' or 'spherical', got {covariance!r}."
        raise KbfmInputError(msg)
    if n_init < 1:
        msg = f"n_init must be at least 1, got {n_init}."
        raise KbfmInputError(msg)
    if n_pcs is not None and n_pcs < rep.shape[1] and n_pcs < rep.shape[0]:
        from sklearn.decomposition import PCA

        rep = PCA(n_pcs, random_state=seed).fit_transform(rep)
    if method == "gmm":
        labels = GaussianMixture(
            n_domains,
            covariance_type=covariance,
            n_init=n_init,
            random_state=seed,
            reg_covar=1e-4,
        ).fit_predict(rep)
    elif method == "kmeans":
        labels = KMeans(n_domains, n_init=n_init, random_state=seed).fit_predict(rep)
    else:
        msg = f"Unknown method {method!r}; choose 'gmm' or 'kmeans'."
        raise KbfmInputError(msg)
    labels = labels.astype(str)
    if smooth:
        labels = smooth_labels(labels, coords, n_neighbors)
    adata = adata.copy() if copy else adata
    adata.obs[key_added] = pd.Categorical(labels)
    record_step(
        adata,
        "domains",
        n_domains=n_domains,
        use_rep=use_rep,
        method=method,
        n_pcs=n_pcs,
        covariance=covariance,
        n_init=n_init,
        smooth=smooth,
        seed=seed,
        key_added=key_added,
    )
    return adata if copy else None
