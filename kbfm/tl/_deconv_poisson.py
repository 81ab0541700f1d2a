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

from dataclasses import dataclass

import numpy as np


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
