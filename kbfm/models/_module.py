"""The torch module behind :class:`kbfm.models.FusionModel` (imported lazily: needs torch)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def mlp(n_in: int, n_hidden: int, n_out: int, depth: int) -> nn.Sequential:
    """``depth`` hidden layers of width ``n_hidden`` (LayerNorm + GELU), then a linear head."""
    layers: list[nn.Module] = []
    width = n_in
    for _ in range(depth):
        layers += [nn.Linear(width, n_hidden), nn.LayerNorm(n_hidden), nn.GELU()]
        width = n_hidden
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


class GraphEncoder(nn.Module):
    """An MLP whose first hidden layer is a graph convolution over the spot graph.

    ``h = LN(0.5 (W x + A W x))``, then GELU and the remaining layers: each spot's
    view latent already sees its neighbours' expression (GraphST/STAGATE-style).
    """

    def __init__(self, n_in: int, n_hidden: int, n_out: int, depth: int) -> None:
        super().__init__()
        self.first = nn.Linear(n_in, n_hidden)
        self.norm = nn.LayerNorm(n_hidden)
        self.rest = mlp(n_hidden, n_hidden, n_out, max(depth - 1, 0))

    def forward(self, x: torch.Tensor, adjacency: torch.Tensor | None = None) -> torch.Tensor:
        h = self.first(x)
        if adjacency is not None:
            h = 0.5 * (h + torch.sparse.mm(adjacency, h))
        return self.rest(F.gelu(self.norm(h)))


class FusionModule(nn.Module):
    """Per-modality encoders into one latent space, graph smoothing, text-conditioned decoder.

    Parameters
    ----------
    n_genes
        Measured genes (model input and reconstruction targets).
    gene_text
        ``(n_genes, d_text)`` text embeddings of the measured genes (zeros allowed).
    d_genetext, d_image
        Widths of the optional cell-level text and image views (0 = absent).
    latent, hidden, depth
        Latent width, hidden width and hidden layers per encoder.
    graph_hops
        Rounds of averaging each spot with its spatial neighbours.
    encoder
        Expression encoder: ``"mlp"`` or ``"gcn"`` (:class:`GraphEncoder`).
    """

    def __init__(
        self,
        n_genes: int,
        gene_text: torch.Tensor,
        *,
        d_genetext: int,
        d_image: int,
        latent: int,
        hidden: int,
        depth: int,
        graph_hops: int = 2,
        encoder: str = "mlp",
    ) -> None:
        super().__init__()
        self.graph_hops = graph_hops
        self.graph_encoder = encoder == "gcn"
        # graph steps between a spot and the farthest spot its latent depends on
        self.receptive_hops = graph_hops + int(self.graph_encoder)
        if self.graph_encoder:
            self.expr = GraphEncoder(n_genes, hidden, latent, depth)
        else:
            self.expr = mlp(n_genes, hidden, latent, depth)
        self.genetext = mlp(d_genetext, hidden, latent, 1) if d_genetext else None
        self.image = mlp(d_image, hidden, latent, depth) if d_image else None
        self.graph_mix = nn.Linear(latent, latent)
        self.register_buffer("gene_text", gene_text.float())
        d_text = gene_text.shape[1]
        # decoder: x_g = z . (W e_g) + b(e_g) (+ a learned residual for measured genes)
        self.text_to_latent = nn.Linear(d_text, latent, bias=False)
        self.text_to_bias = nn.Linear(d_text, 1)
        self.gene_residual = nn.Parameter(torch.zeros(n_genes, latent))
        self.gene_bias = nn.Parameter(torch.zeros(n_genes))

    def encode_views(self, x, genetext=None, image=None, adjacency=None) -> dict[str, torch.Tensor]:
        """Latent of each available view (before fusion and graph smoothing)."""
        views = {"expr": self.expr(x, adjacency) if self.graph_encoder else self.expr(x)}
        if self.genetext is not None and genetext is not None:
            views["genetext"] = self.genetext(genetext)
        if self.image is not None and image is not None:
            views["image"] = self.image(image)
        return views

    def fuse(self, views: dict[str, torch.Tensor], adjacency: torch.Tensor | None) -> torch.Tensor:
        """Sum the views, then average each spot with its neighbours ``graph_hops`` times."""
        return self.mix(self.sum_views(views), adjacency)

    @staticmethod
    def sum_views(views: dict[str, torch.Tensor]) -> torch.Tensor:
        """Each spot's own latent: the sum of its views, before any graph mixing."""
        return torch.stack(list(views.values())).sum(0)

    def mix(self, h: torch.Tensor, adjacency: torch.Tensor | None) -> torch.Tensor:
        """Average ``h`` with the neighbours' ``graph_hops`` times, then a linear residual."""
        if adjacency is not None:
            for _ in range(self.graph_hops):
                h = 0.5 * (h + torch.sparse.mm(adjacency, h))
            h = h + self.graph_mix(h)
        return h

    def gene_weights(self, gene_text: torch.Tensor, residual: bool = True):
        """Decoder weights and biases for genes given their text embeddings."""
        w = self.text_to_latent(gene_text)
        b = self.text_to_bias(gene_text).squeeze(-1)
        if residual:
            w = w + self.gene_residual
            b = b + self.gene_bias
        return w, b

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruct the measured genes."""
        w, b = self.gene_weights(self.gene_text)
        return z @ w.T + b


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Symmetric InfoNCE between matched rows of ``a`` and ``b`` (Loki/BLEEP-style)."""
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    logits = a @ b.T / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def neighbour_consistency(
    z: torch.Tensor, adjacency: torch.Tensor, generator, n_seeds: int | None = None
) -> torch.Tensor:
    """A spot agrees with its neighbours' mean more than with shuffled spots' (DGI-style).

    With ``n_seeds``, only the first ``n_seeds`` rows (a batch whose neighbourhood fills
    the remaining rows) are scored, against negatives from the same batch.
    """
    n_seeds = z.shape[0] if n_seeds is None else n_seeds
    summary = torch.sparse.mm(adjacency, z)[:n_seeds]
    z = z[:n_seeds]
    perm = torch.randperm(n_seeds, generator=generator, device="cpu").to(z.device)
    zn = F.normalize(z, dim=1)
    pos = (zn * F.normalize(summary, dim=1)).sum(1)
    neg = (zn * F.normalize(summary[perm], dim=1)).sum(1)
    logits = torch.cat([pos, neg]) / 0.2
    labels = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)])
    return F.binary_cross_entropy_with_logits(logits, labels)
