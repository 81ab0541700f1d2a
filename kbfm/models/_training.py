"""FusionModel training: full batch for small data, spatial mini-batches for large data.

Both modes share the objectives and the validation protocol: a fixed set of held-out
spots keeps one fixed mask, their hidden entries are never seen as input, and their
reconstruction loss on those entries decides early stopping.

Mini-batches are compact spatial tiles (a new random rotation of the tiling every
epoch) together with every spot within the model's receptive field (``graph_hops``
steps), so each tile's mixed latents are exact; losses are computed on the tile's spots,
and the neighbour contrast draws its negatives from the same tile.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from .._keys import CELL_TEXT_KEY, IMAGE_KEY
from ._graph import neighbourhood, spatial_tiles, torch_adjacency

FULL_BATCH_MAX_SPOTS = 20_000
AUTO_BATCH_SIZE = 2048


@dataclass
class Split:
    """Held-out spots and the fixed mask of their entries (kept across ``train`` calls)."""

    val_index: np.ndarray
    val_mask: object  # torch.BoolTensor (n_val, n_genes)
    is_val: np.ndarray
    val_row: np.ndarray  # position of each spot in val_index, -1 for training spots


def resolve_batch_size(batch_size: int | str | None, n_obs: int) -> int | None:
    """``None`` = full batch; ``"auto"`` = full batch up to 20,000 spots, else 2,048."""
    if batch_size == "auto":
        return None if n_obs <= FULL_BATCH_MAX_SPOTS else AUTO_BATCH_SIZE
    if batch_size is None or batch_size >= n_obs:
        return None
    return int(batch_size)


def make_split(n: int, n_genes: int, fraction: float, mask_fraction: float, gen, full: bool):  # noqa: PLR0917
    """Draw the held-out spots and their fixed mask (``full``: as the full-batch loop did)."""
    import torch

    n_val = max(1, int(fraction * n))
    val_index = torch.randperm(n, generator=gen)[:n_val].numpy()
    if full:  # one draw over every spot, as earlier versions did: same seed, same model
        val_mask = (torch.rand((n, n_genes), generator=gen) < mask_fraction)[val_index]
    else:
        val_mask = torch.rand((n_val, n_genes), generator=gen) < mask_fraction
    is_val = np.zeros(n, dtype=bool)
    is_val[val_index] = True
    val_row = np.full(n, -1, dtype=np.int64)
    val_row[val_index] = np.arange(n_val)
    return Split(val_index, val_mask, is_val, val_row)


def node_mask(split: Split, nodes: np.ndarray, mask):
    """Replace the rows of held-out spots in ``mask`` by their fixed mask."""
    rows = split.val_row[nodes]
    held = np.flatnonzero(rows >= 0)
    if held.size:
        mask[held] = split.val_mask[rows[held]].to(mask.device)
    return mask


def epoch_defaults(max_epochs, patience, steps_per_epoch: int) -> tuple[int, int]:
    """Full batch: 300 epochs, patience 40. Mini-batch: about as many optimiser steps."""
    if max_epochs is None:
        max_epochs = 300 if steps_per_epoch == 1 else max(20, math.ceil(300 / steps_per_epoch))
    if patience is None:
        patience = 40 if steps_per_epoch == 1 else max(5, math.ceil(40 / steps_per_epoch))
    return max_epochs, patience


class Batches:
    """Views of a model's data for one set of spots: inputs, optional views, subgraph."""

    def __init__(self, model, device) -> None:
        self.model = model
        self.device = device
        self.hops = model.module.receptive_hops if model.module is not None else 0

    def tensors(self, nodes: np.ndarray | None):
        """``x, genetext, image, adjacency`` of ``nodes`` (all spots when ``None``)."""
        import torch

        m, dev = self.model, self.device
        x = torch.from_numpy(m.inputs_for(nodes)).to(dev)
        sel = slice(None) if nodes is None else nodes

        def view(key):
            if key not in m.views:
                return None
            return torch.from_numpy(np.ascontiguousarray(m.views[key][sel])).to(dev)

        adj = None
        if m.adjacency is not None:
            sub = m.adjacency if nodes is None else m.adjacency[nodes][:, nodes]
            adj = torch_adjacency(sub, dev)
        return x, view(CELL_TEXT_KEY), view(IMAGE_KEY), adj

    def nodes(self, seeds: np.ndarray) -> np.ndarray:
        if self.model.adjacency is None:
            return seeds
        return neighbourhood(self.model.adjacency, seeds, self.hops)


def losses(module, cfg, x, gt, im, adj, mask, n_seeds, train_rows, gen):  # noqa: PLR0917
    """Objectives of one batch: the first ``n_seeds`` rows are scored."""
    import torch

    from ._module import info_nce, neighbour_consistency

    views = module.encode_views(x.masked_fill(mask, 0.0), gt, im, adj)
    local = module.sum_views(views)
    z = module.mix(local, adj)[:n_seeds]
    err = (module.decode(z) - x[:n_seeds]).pow(2) * mask[:n_seeds]
    keep = torch.from_numpy(train_rows).to(x.device)
    train_loss = err[keep].sum() / mask[:n_seeds][keep].sum().clamp(min=1)
    val_loss = err[~keep].sum() / mask[:n_seeds][~keep].sum().clamp(min=1)
    loss = cfg.w_reconstruction * train_loss
    terms = {"reconstruction": train_loss}
    if cfg.w_contrastive > 0 and "image" in views:
        c = info_nce(views["expr"][:n_seeds], views["image"][:n_seeds])
        loss, terms["contrastive"] = loss + cfg.w_contrastive * c, c
    if cfg.w_neighbour > 0 and adj is not None:
        # each spot's own (not yet graph-mixed) latent against its neighbourhood
        s = neighbour_consistency(local, adj, gen, n_seeds)
        loss, terms["neighbour"] = loss + cfg.w_neighbour * s, s
    return loss, terms, val_loss


def validation_loss(module, cfg, batches: Batches, split: Split, tiles) -> float:
    """Reconstruction loss of the held-out spots' hidden entries (eval mode, no grad)."""
    import torch

    total, count = 0.0, 0.0
    module.eval()
    with torch.inference_mode():
        for seeds in tiles:
            nodes = batches.nodes(seeds)
            x, gt, im, adj = batches.tensors(nodes)
            mask = node_mask(split, nodes, torch.zeros(x.shape, dtype=torch.bool))
            mask = mask.to(x.device)
            views = module.encode_views(x.masked_fill(mask, 0.0), gt, im, adj)
            z = module.mix(module.sum_views(views), adj)[: len(seeds)]
            m = mask[: len(seeds)]
            total += float(((module.decode(z) - x[: len(seeds)]).pow(2) * m).sum())
            count += float(m.sum())
    module.train()
    return total / max(count, 1.0)


def fit(model, *, batch_size, max_epochs, patience, lr, validation_fraction, device, progress):
    """Train ``model.module`` in place; append one history entry per epoch.

    Returns the number of epochs run in this call.
    """
    import torch

    cfg, module = model.config, model.module
    n = model.n_obs
    batches = Batches(model, device)
    call = model._train_calls
    gen = torch.Generator().manual_seed(cfg.seed + 1_000_003 * call)
    rng = np.random.default_rng([cfg.seed, call])
    if model._split is None:
        model._split = make_split(
            n, len(cfg.genes), validation_fraction, cfg.mask_fraction, gen, batch_size is None
        )
    split = model._split
    coords = model.coords
    if batch_size is not None and coords is None:
        coords = np.column_stack([np.arange(n), np.zeros(n)])
    steps = 1 if batch_size is None else len(spatial_tiles(coords, batch_size))
    max_epochs, patience = epoch_defaults(max_epochs, patience, steps)
    if batch_size is None:
        x, gt, im, adj = batches.tensors(None)
        full_val = torch.zeros(x.shape, dtype=torch.bool)
        full_val[torch.from_numpy(split.val_index)] = split.val_mask
        full_val = full_val.to(device)
        is_val = torch.from_numpy(split.is_val).to(device)
    else:
        fixed = spatial_tiles(coords, batch_size)
        val_tiles = [t[split.is_val[t]] for t in fixed if split.is_val[t].any()]
    opt = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=1e-4)
    best, best_state, waited = float("inf"), None, 0
    start_epoch = len(model.history)
    pbar = progress(range(max_epochs))
    for epoch in pbar:
        started = time.perf_counter()
        module.train()
        if batch_size is None:
            mask = (torch.rand(x.shape, generator=gen) < cfg.mask_fraction).to(device)
            mask = torch.where(is_val[:, None], full_val, mask)
            loss, terms, val_t = losses(
                module, cfg, x, gt, im, adj, mask, n, ~split.is_val, gen
            )  # fmt: skip
            opt.zero_grad()
            loss.backward()
            opt.step()
            val_loss = val_t.item()
            sums = {k: v.item() for k, v in terms.items()} | {"loss": loss.item()}
        else:
            sums: dict[str, float] = {}
            for seeds in spatial_tiles(coords, batch_size, rng):
                nodes = batches.nodes(seeds)
                xb, gtb, imb, adjb = batches.tensors(nodes)
                mask = torch.rand(xb.shape, generator=gen) < cfg.mask_fraction
                mask = node_mask(split, nodes, mask).to(device)
                loss, terms, _ = losses(
                    module, cfg, xb, gtb, imb, adjb, mask, len(seeds), ~split.is_val[seeds], gen
                )  # fmt: skip
                opt.zero_grad()
                loss.backward()
                opt.step()
                for k, v in (terms | {"loss": loss}).items():
                    sums[k] = sums.get(k, 0.0) + v.item() * len(seeds) / n
            val_loss = validation_loss(module, cfg, batches, split, val_tiles)
        model.history.append(
            {
                "epoch": start_epoch + epoch,
                "round": call,
                "steps": steps,
                **sums,
                "val_reconstruction": val_loss,
                "seconds": time.perf_counter() - started,
            }
        )
        pbar.set_postfix(loss=f"{sums['loss']:.3f}", val=f"{val_loss:.3f}")
        if val_loss < best - 1e-4:
            best, waited = val_loss, 0
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        else:
            waited += 1
            if waited >= patience:
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    return epoch + 1
