"""Count-likelihood deconvolution in PyTorch, in the spirit of RCTD and cell2location.

Model, for spot ``n`` and gene ``g``::

    y_ng ~ NB(mu_ng, r_g)   (or Poisson(mu_ng))
    mu_ng = s_n * exp(gamma_g) * sum_k pi_nk * S_kg

``S`` are the cell-type signatures (mean counts per cell), ``pi_n`` the proportions
(softmax of free logits), ``s_n`` a per-spot scale (how many cells, and the depth), and
``gamma_g`` a gene-specific platform effect (how much more or less the spatial assay
captures gene ``g`` than the reference), with a Normal(0, ``gamma_sd``) prior.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from anndata import AnnData

from ..._errors import KbfmInputError
from ..._settings import settings
from ..._validate import check_adata
from ._inputs import counts_matrix
from ._reference import ReferenceOptions, reference_signatures, require_reference
from ._result import PROPORTIONS_KEY, write_proportions
from .nnls import nnls_proportions


@dataclass
class CountFit:
    """Result of :func:`fit_count_model`."""

    proportions: np.ndarray
    spot_scale: np.ndarray
    platform_effect: np.ndarray
    dispersion: np.ndarray | None
    loss: list[float]


def fit_count_model(
    Y: np.ndarray,
    S: np.ndarray,
    *,
    init: np.ndarray | None = None,
    likelihood: str = "nb",
    gamma_sd: float = 0.5,
    n_epochs: int = 1000,
    lr: float = 0.05,
    seed: int = 0,
    device: str = "cpu",
) -> CountFit:
    """Fit proportions, spot scales and platform effects by maximum a posteriori.

    Parameters
    ----------
    Y
        Spot counts ``(n_spots, n_genes)``.
    S
        Signatures ``(n_types, n_genes)``, non-negative.
    init
        Starting proportions ``(n_spots, n_types)`` (e.g. from NNLS); uniform if None.
    likelihood
        ``"nb"`` (negative binomial, one dispersion per gene) or ``"poisson"``.
    gamma_sd
        Prior standard deviation of the log platform effects.
    n_epochs, lr
        Full-batch Adam steps and learning rate.
    seed
        Torch seed.
    device
        Torch device.

    Returns
    -------
    A :class:`CountFit`.
    """
    import torch

    torch.manual_seed(seed)
    dt = torch.float32
    y = torch.as_tensor(np.asarray(Y, dtype=np.float32), device=device)
    sig = torch.as_tensor(np.asarray(S, dtype=np.float32), device=device).clamp_min(1e-8)
    n, k = y.shape[0], sig.shape[0]
    p0 = np.full((n, k), 1.0 / k) if init is None else np.asarray(init, dtype=float)
    p0 = 0.9 * p0 + 0.1 / k
    logits = torch.tensor(np.log(p0), dtype=dt, device=device, requires_grad=True)
    expected = (torch.as_tensor(p0, dtype=dt, device=device) @ sig).sum(1)
    s0 = (y.sum(1) / expected.clamp_min(1e-8)).clamp_min(1e-3)
    log_s = torch.log(s0).detach().clone().requires_grad_(True)
    gamma = torch.zeros(sig.shape[1], dtype=dt, device=device, requires_grad=True)
    params = [logits, log_s, gamma]
    log_r = None
    if likelihood == "nb":
        log_r = torch.full((sig.shape[1],), np.log(10.0), dtype=dt, device=device)
        log_r.requires_grad_(True)
        params.append(log_r)
    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    for _ in range(n_epochs):
        opt.zero_grad()
        pi = torch.softmax(logits, dim=1)
        mu = torch.exp(log_s)[:, None] * torch.exp(gamma)[None, :] * (pi @ sig) + 1e-8
        if log_r is None:
            ll = y * torch.log(mu) - mu - torch.lgamma(y + 1)
        else:
            r = torch.exp(log_r)[None, :]
            ll = (
                torch.lgamma(y + r)
                - torch.lgamma(r)
                - torch.lgamma(y + 1)
                + r * torch.log(r / (r + mu))
                + y * torch.log(mu / (r + mu))
            )
        loss = -ll.sum() / n + 0.5 * (gamma / gamma_sd).pow(2).sum() / n
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        pi = torch.softmax(logits, dim=1).cpu().numpy()
        return CountFit(
            proportions=pi.astype(float),
            spot_scale=torch.exp(log_s).cpu().numpy().astype(float),
            platform_effect=gamma.cpu().numpy().astype(float),
            dispersion=None if log_r is None else torch.exp(log_r).cpu().numpy().astype(float),
            loss=losses,
        )


LIKELIHOODS = ("nb", "poisson")


@dataclass(frozen=True)
class CountModelOptions:
    """The count model's options; ``method="poisson"`` and ``"knowledge"`` share them."""

    likelihood: str = "nb"
    n_epochs: int = 1000
    lr: float = 0.05
    gamma_sd: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.likelihood not in LIKELIHOODS:
            msg = f"likelihood must be 'nb' or 'poisson', got {self.likelihood!r}."
            raise KbfmInputError(msg)

    def fit(
        self,
        Y: np.ndarray,
        S: np.ndarray,
        *,
        device: str,
        init: np.ndarray | None = None,
        gamma_sd: float | None = None,
    ) -> CountFit:
        """:func:`fit_count_model` with these options (``gamma_sd`` overrides the prior)."""
        return fit_count_model(
            Y,
            S,
            init=init,
            likelihood=self.likelihood,
            gamma_sd=self.gamma_sd if gamma_sd is None else gamma_sd,
            n_epochs=self.n_epochs,
            lr=self.lr,
            seed=self.seed,
            device=device,
        )


def deconvolve_poisson(
    adata: AnnData,
    reference: AnnData,
    *,
    label_key: str = "cell_type",
    layer: str | None = None,
    reference_layer: str | None = None,
    species: str = "auto",
    reference_species: str = "auto",
    genes: Sequence[str] | None = None,
    n_genes_per_type: int = 100,
    min_cells_per_type: int = 2,
    likelihood: str = "nb",
    n_epochs: int = 1000,
    lr: float = 0.05,
    gamma_sd: float = 0.5,
    seed: int = 0,
    key_added: str = PROPORTIONS_KEY,
    copy: bool = False,
) -> AnnData | None:
    """Cell-type proportions per spot from a negative-binomial (or Poisson) count model.

    In the spirit of RCTD / cell2location:
    ``mu = s_spot * exp(gamma_gene) * proportions @ signatures`` with a per-spot scale
    and gene-specific platform effects, fitted with PyTorch from the NNLS solution (see
    :mod:`kbfm.tl.deconvolve.poisson`). Proportions are fractions of cells when the
    reference holds raw counts (signatures keep each type's mRNA content); with a
    normalised reference they are fractions of RNA. ``deconvolve(method="poisson")``
    calls this function.

    Parameters
    ----------
    adata
        Spatial data, spots x genes, raw counts in ``X`` or ``layer``.
    reference
        Labelled single-cell reference (cells x genes).
    label_key
        ``reference.obs`` column with cell-type labels.
    layer, reference_layer
        Layers with raw counts.
    species, reference_species
        ``"human"``, ``"mouse"`` or ``"auto"`` (from the symbols); when they differ, genes
        are mapped through orthologs.
    genes
        Use exactly these genes instead of the informative genes of the reference.
    n_genes_per_type
        Informative genes picked per cell type.
    min_cells_per_type
        Refuse reference types with fewer cells.
    likelihood
        ``"nb"`` or ``"poisson"``.
    n_epochs, lr, gamma_sd
        Adam steps, learning rate, prior sd of the log platform effects.
    seed
        Random seed.
    key_added
        ``obsm`` key of the proportions.
    copy
        Work on a copy and return it.

    Returns
    -------
    ``None`` (or a copy). Writes ``obsm[key_added]``: DataFrame spots x cell types (rows
    sum to 1); ``var[f"{key_added}_used"]`` (genes used) and
    ``var[f"{key_added}_platform_effect"]`` (log scale, NaN for unused genes);
    parameters, gene matching report and genes used in ``uns["kbfm"]["deconvolve"]``.

    Examples
    --------
    >>> import kbfm
    >>> kbfm.tl.deconvolve_poisson(spots, cells, label_key="cell_type")  # doctest: +SKIP
    >>> spots.obsm["kbfm_proportions"].head()  # doctest: +SKIP
    """
    check_adata(adata)
    options = ReferenceOptions(
        label_key=label_key,
        reference_layer=reference_layer,
        species=species,
        reference_species=reference_species,
        genes=genes,
        n_genes_per_type=n_genes_per_type,
        min_cells_per_type=min_cells_per_type,
    )
    model = CountModelOptions(likelihood, n_epochs, lr, gamma_sd, seed)
    require_reference(reference, "poisson")
    Y_all, sp_names, sp_kind = counts_matrix(adata, layer=layer, what="spatial", need_counts=True)
    device = settings.resolve_device()
    params = {
        "method": "poisson",
        "label_key": label_key,
        **asdict(model),
        "spatial_layer": layer,
        "spatial_scale": sp_kind,
    }
    ref = reference_signatures(reference, Y_all, sp_names, options)
    params.update(ref.params)
    P, _ = nnls_proportions(ref.Y, ref.S)
    fit = model.fit(ref.Y, ref.S, init=P, device=device)
    return write_proportions(
        adata,
        fit.proportions,
        types=ref.types,
        used_idx=ref.used_idx,
        Y=ref.Y,
        spatial_names=sp_names,
        fit=fit,
        params=params,
        key_added=key_added,
        copy=copy,
    )
