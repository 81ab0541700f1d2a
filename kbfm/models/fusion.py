"""FusionModel: fuse expression, gene knowledge and histology into one spatial representation.

Lifecycle (scvi-tools style)::

    model = kbfm.models.FusionModel.setup(adata, preset="base")
    model.train()
    adata.obsm["X_kbfm"] = model.get_latent_representation()
    model.save("my_model/")
    model = kbfm.models.FusionModel.load("my_model/", new_adata)

Views: log-normalised expression of ``n_top_genes`` genes (always; spatially variable genes when
``obsm["spatial"]`` exists, else highly variable ones), ``obsm["X_genetext"]`` and
``obsm["X_image"]`` (when present and enabled). Objectives, each with a weight (0 = off):
masked-expression reconstruction through a decoder that scores gene g by
``z · (W e_g)`` with e_g its text embedding (so genes never measured but described can
be imputed), cross-modal InfoNCE between the expression and image views, and spatial
neighbour consistency (each spot's own latent against its neighbourhood). The spatial
graph (k nearest spots in ``obsm["spatial"]``) also mixes each spot with its neighbours
in the encoder.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from anndata import AnnData

from .._atomic import atomic_write, atomic_write_text
from .._errors import KbfmInputError, preview
from .._expression import log_normalised as _log_normalised
from .._provenance import record_step
from .._settings import settings
from .._spatial_graph import spatial_adjacency
from .._validate import expression_matrix
from .._version import __version__

LATENT_KEY = "X_kbfm"


@dataclass(frozen=True)
class Preset:
    """Model scale: latent width, hidden width, hidden layers per encoder."""

    latent: int
    hidden: int
    depth: int


PRESETS = {
    "tiny": Preset(latent=16, hidden=64, depth=1),
    "base": Preset(latent=32, hidden=256, depth=1),
    "large": Preset(latent=64, hidden=512, depth=2),
}


@dataclass
class FusionConfig:
    """Everything needed to rebuild a model (saved as config.json)."""

    genes: list[str]
    preset: str = "base"
    n_neighbors: int = 6
    graph_hops: int = 2
    gene_selection: str = "hvg"
    use_genetext: bool = True
    use_image: bool = True
    d_genetext: int = 0
    d_image: int = 0
    w_reconstruction: float = 1.0
    w_contrastive: float = 1.0
    w_neighbour: float = 1.0
    mask_fraction: float = 0.25
    layer: str | None = None
    knowledge_source: str = "builtin"
    text_encoder: str = "minilm"
    species: str = "human"
    gene_mean: list[float] = field(default_factory=list)
    gene_std: list[float] = field(default_factory=list)
    input_was_counts: bool = False
    seed: int = 0
    kbfm_version: str = __version__


class FusionModel:
    """Trainable fusion of expression, gene-text knowledge and histology (see module docs)."""

    def __init__(self, adata: AnnData, config: FusionConfig, gene_text: np.ndarray) -> None:
        self.adata = adata
        self.config = config
        self.gene_text = gene_text.astype(np.float32)
        self.module = None
        self.history: list[dict] = []
        self._prepare(adata)

    # ---------------------------------------------------------------- setup
    @classmethod
    def setup(
        cls,
        adata: AnnData,
        *,
        preset: str = "base",
        n_top_genes: int = 2000,
        gene_selection: str = "auto",
        layer: str | None = None,
        use_genetext: bool = True,
        use_image: bool = True,
        w_reconstruction: float = 1.0,
        w_contrastive: float = 1.0,
        w_neighbour: float = 1.0,
        n_neighbors: int = 6,
        graph_hops: int = 2,
        knowledge_source: str = "builtin",
        text_encoder: str = "minilm",
        species: str = "human",
        seed: int = 0,
    ) -> FusionModel:
        """Check the data, pick highly variable genes, embed their knowledge, build a model.

        Parameters
        ----------
        adata
            Counts or log-normalised expression; ``obsm["spatial"]`` is needed when
            ``w_neighbour > 0`` (and used for graph mixing when present).
        preset
            ``"tiny"``, ``"base"`` or ``"large"``.
        n_top_genes
            Genes used as input and reconstruction targets.
        gene_selection
            How those genes are chosen: ``"spatial"`` (highest Moran's I over the spot
            graph, :func:`kbfm.pp.spatially_variable_genes`), ``"hvg"`` (scanpy highly
            variable genes) or ``"auto"`` (spatial when ``obsm['spatial']`` is present).
        layer
            Read expression from this layer.
        use_genetext, use_image
            Use ``obsm["X_genetext"]`` / ``obsm["X_image"]`` when present.
        w_reconstruction, w_contrastive, w_neighbour
            Objective weights (0 switches an objective off).
        n_neighbors
            Spatial neighbours per spot (6 suits the Visium hexagonal grid).
        graph_hops
            Rounds of neighbour averaging in the encoder (0 = none).
        knowledge_source, text_encoder, species
            Gene knowledge for the text-conditioned decoder (see ``kbfm.tl.embed_genes``).
        seed
            Seed for initialisation, masks and splits.

        Returns
        -------
        An untrained :class:`FusionModel`.
        """
        import scanpy as sc

        if preset not in PRESETS:
            msg = f"Unknown preset {preset!r}; choose from {sorted(PRESETS)}."
            raise KbfmInputError(msg)
        for name, w in (
            ("w_reconstruction", w_reconstruction),
            ("w_contrastive", w_contrastive),
            ("w_neighbour", w_neighbour),
        ):
            if w < 0:
                msg = f"{name} must be >= 0, got {w}."
                raise KbfmInputError(msg)
        if gene_selection not in ("auto", "spatial", "hvg"):
            msg = f"gene_selection must be 'auto', 'spatial' or 'hvg', got {gene_selection!r}."
            raise KbfmInputError(msg)
        if gene_selection == "auto":
            gene_selection = "spatial" if "spatial" in adata.obsm else "hvg"
        if gene_selection == "spatial" and "spatial" not in adata.obsm:
            msg = "gene_selection='spatial' needs obsm['spatial'] (spot coordinates)."
            raise KbfmInputError(msg)
        X, names = expression_matrix(adata, layer=layer)
        if adata.n_obs < 20:
            msg = f"FusionModel needs at least 20 spots for a validation split, got {adata.n_obs}."
            raise KbfmInputError(msg)
        if w_neighbour > 0 and "spatial" not in adata.obsm:
            msg = (
                "w_neighbour > 0 needs obsm['spatial'] (spot coordinates); "
                "add it or set w_neighbour=0."
            )
            raise KbfmInputError(msg)
        logn, counts = _log_normalised(X)
        tmp = AnnData(logn)
        tmp.var_names = [str(n) for n in names]
        n_top = min(n_top_genes, tmp.n_vars)
        if gene_selection == "spatial":
            from ..pp.spatially_variable import morans_i_of_matrix, top_gene_flags

            coords = np.asarray(adata.obsm["spatial"], dtype=np.float64)
            flags = top_gene_flags(morans_i_of_matrix(logn, coords, n_neighbors), n_top)
        else:
            sc.pp.highly_variable_genes(tmp, n_top_genes=n_top, flavor="seurat")
            flags = tmp.var["highly_variable"].to_numpy()
        genes = list(tmp.var_names[flags])
        values = tmp[:, genes].X
        mean, std = values.mean(0), values.std(0) + 1e-6
        gene_text = _gene_text(genes, knowledge_source, text_encoder, species)
        d_gt = (
            adata.obsm["X_genetext"].shape[1] if use_genetext and "X_genetext" in adata.obsm else 0
        )
        d_im = adata.obsm["X_image"].shape[1] if use_image and "X_image" in adata.obsm else 0
        config = FusionConfig(
            genes=genes,
            preset=preset,
            n_neighbors=n_neighbors,
            graph_hops=graph_hops,
            gene_selection=gene_selection,
            use_genetext=use_genetext,
            use_image=use_image,
            d_genetext=int(d_gt),
            d_image=int(d_im),
            w_reconstruction=w_reconstruction,
            w_contrastive=w_contrastive if d_im else 0.0,
            w_neighbour=w_neighbour,
            layer=layer,
            knowledge_source=str(knowledge_source),
            text_encoder=str(text_encoder),
            species=species,
            gene_mean=mean.tolist(),
            gene_std=std.tolist(),
            input_was_counts=counts,
            seed=seed,
        )
        return cls(adata, config, gene_text)

    def _prepare(self, adata: AnnData) -> None:
        cfg = self.config
        X, names = expression_matrix(adata, layer=cfg.layer)
        logn, _ = _log_normalised(X)
        index = {str(n): i for i, n in enumerate(names)}
        missing = [g for g in cfg.genes if g not in index]
        if len(missing) == len(cfg.genes):
            msg = (
                f"None of the model's {len(cfg.genes)} genes are in this data; "
                f"e.g. {preview(cfg.genes)}."
            )
            raise KbfmInputError(msg)
        self.missing_genes = missing
        cols = np.asarray([index.get(g, -1) for g in cfg.genes])
        values = np.where(cols >= 0, logn[:, np.maximum(cols, 0)], np.asarray(cfg.gene_mean))
        self.inputs = ((values - np.asarray(cfg.gene_mean)) / np.asarray(cfg.gene_std)).clip(
            -10, 10
        )
        self.inputs = self.inputs.astype(np.float32)
        self.views = {}
        for key, dim, on in (
            ("X_genetext", cfg.d_genetext, cfg.use_genetext),
            ("X_image", cfg.d_image, cfg.use_image),
        ):
            if on and dim:
                if key not in adata.obsm:
                    msg = f"The model was trained with obsm[{key!r}]; this data lacks it."
                    raise KbfmInputError(msg)
                view = np.asarray(adata.obsm[key], dtype=np.float32)
                if view.shape != (adata.n_obs, dim):
                    msg = f"obsm[{key!r}] is {view.shape}; expected ({adata.n_obs}, {dim})."
                    raise KbfmInputError(msg)
                if not np.isfinite(view).all():
                    msg = f"obsm[{key!r}] holds NaN or infinite values."
                    raise KbfmInputError(msg)
                self.views[key] = view
        self.adjacency = (
            spatial_adjacency(np.asarray(adata.obsm["spatial"], float), cfg.n_neighbors)
            if "spatial" in adata.obsm
            else None
        )

    # ---------------------------------------------------------------- training
    def _build(self):
        import torch

        from ._module import FusionModule

        p = PRESETS[self.config.preset]
        torch.manual_seed(self.config.seed)
        self.module = FusionModule(
            len(self.config.genes),
            torch.from_numpy(self.gene_text),
            d_genetext=self.config.d_genetext,
            d_image=self.config.d_image,
            latent=p.latent,
            hidden=p.hidden,
            depth=p.depth,
            graph_hops=self.config.graph_hops,
        )

    def _tensors(self, device):
        import torch

        x = torch.from_numpy(self.inputs).to(device)
        gt = (
            torch.from_numpy(self.views["X_genetext"]).to(device)
            if "X_genetext" in self.views
            else None
        )
        im = torch.from_numpy(self.views["X_image"]).to(device) if "X_image" in self.views else None
        adj = None
        if self.adjacency is not None:
            coo = self.adjacency.tocoo()
            idx = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
            adj = (
                torch.sparse_coo_tensor(
                    idx, torch.from_numpy(coo.data), coo.shape, check_invariants=False
                )
                .coalesce()
                .to(device)
            )
        return x, gt, im, adj

    def train(
        self,
        *,
        max_epochs: int = 300,
        lr: float = 2e-3,
        validation_fraction: float = 0.1,
        patience: int = 40,
        device: str | None = None,
    ) -> FusionModel:
        """Train full-batch with AdamW, early stopping on the validation reconstruction loss.

        Parameters
        ----------
        max_epochs
            Upper bound on epochs.
        lr
            Learning rate.
        validation_fraction
            Spots held out for early stopping: one fixed mask hides the same entries of
            these spots every epoch, and their loss on those entries is the stopping score.
        patience
            Epochs without validation improvement before stopping.
        device
            ``"cpu"``, ``"cuda"`` or ``None`` (``kbfm.settings``).

        Returns
        -------
        ``self``; losses per epoch in ``self.history``.
        """
        import torch
        from tqdm.auto import tqdm

        from ._module import info_nce, neighbour_consistency

        cfg = self.config
        device = device or settings.resolve_device()
        self._build()
        module = self.module.to(device)
        x, gt, im, adj = self._tensors(device)
        gen = torch.Generator().manual_seed(cfg.seed)
        n = x.shape[0]
        val = torch.zeros(n, dtype=torch.bool)
        val[torch.randperm(n, generator=gen)[: max(1, int(validation_fraction * n))]] = True
        val = val.to(device)
        # validation spots keep one fixed mask, so early stopping compares epochs on the
        # same hidden entries instead of on a fresh random draw each epoch
        val_mask = (torch.rand(x.shape, generator=gen) < cfg.mask_fraction).to(device)
        opt = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=1e-4)
        best, best_state, waited = float("inf"), None, 0
        started = time.perf_counter()
        bar = tqdm(
            range(max_epochs), desc=f"FusionModel[{cfg.preset}]", disable=not settings.progress
        )
        for epoch in bar:
            module.train()
            mask = (torch.rand(x.shape, generator=gen) < cfg.mask_fraction).to(device)
            mask = torch.where(val[:, None], val_mask, mask)
            views = module.encode_views(x.masked_fill(mask, 0.0), gt, im)
            local = module.sum_views(views)
            z = module.mix(local, adj)
            recon = module.decode(z)
            err = (recon - x).pow(2) * mask
            train_loss = err[~val].sum() / mask[~val].sum().clamp(min=1)
            val_loss = err[val].sum() / mask[val].sum().clamp(min=1)
            loss = cfg.w_reconstruction * train_loss
            terms = {"reconstruction": train_loss.item()}
            if cfg.w_contrastive > 0 and "image" in views:
                c = info_nce(views["expr"], views["image"])
                loss = loss + cfg.w_contrastive * c
                terms["contrastive"] = c.item()
            if cfg.w_neighbour > 0 and adj is not None:
                # each spot's own (not yet graph-mixed) latent against its neighbourhood
                s = neighbour_consistency(local, adj, gen)
                loss = loss + cfg.w_neighbour * s
                terms["neighbour"] = s.item()
            opt.zero_grad()
            loss.backward()
            opt.step()
            self.history.append(
                {
                    "epoch": epoch,
                    "loss": loss.item(),
                    "val_reconstruction": val_loss.item(),
                    **terms,
                }
            )
            bar.set_postfix(loss=f"{loss.item():.3f}", val=f"{val_loss.item():.3f}")
            if val_loss.item() < best - 1e-4:
                best, waited = val_loss.item(), 0
                best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            else:
                waited += 1
                if waited >= patience:
                    break
        if best_state is not None:
            module.load_state_dict(best_state)
        self.train_seconds = time.perf_counter() - started
        return self

    def _require_trained(self):
        if self.module is None:
            msg = "The model is not trained yet: call model.train() (or FusionModel.load)."
            raise KbfmInputError(msg)

    def get_latent_representation(self) -> np.ndarray:
        """Return the fused latent of every spot, ``(n_obs, latent)``."""
        import torch

        self._require_trained()
        module = self.module.eval()
        device = next(module.parameters()).device
        x, gt, im, adj = self._tensors(device)
        with torch.inference_mode():
            z = module.fuse(module.encode_views(x, gt, im), adj)
        return z.cpu().numpy().astype(np.float32)

    def to_adata(self, key_added: str = LATENT_KEY) -> None:
        """Write the latent into ``adata.obsm[key_added]`` with provenance."""
        self.adata.obsm[key_added] = self.get_latent_representation()
        record_step(
            self.adata,
            "fusion_model",
            key_added=key_added,
            preset=self.config.preset,
            n_genes=len(self.config.genes),
            gene_selection=self.config.gene_selection,
            views=[*list(self.views), "expression"],
            w_reconstruction=self.config.w_reconstruction,
            w_contrastive=self.config.w_contrastive,
            w_neighbour=self.config.w_neighbour,
            seed=self.config.seed,
            epochs=len(self.history),
        )

    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        self._require_trained()
        return sum(p.numel() for p in self.module.parameters() if p.requires_grad)

    # ---------------------------------------------------------------- save / load
    def save(self, folder: str | Path) -> Path:
        """Save weights (safetensors) and config (JSON) into ``folder``."""
        from safetensors.torch import save_file

        self._require_trained()
        folder = Path(folder)
        state = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        atomic_write(folder / "model.safetensors", lambda tmp: save_file(state, tmp))
        np_text = self.gene_text.tolist()
        payload = {"config": asdict(self.config), "gene_text": np_text}
        atomic_write_text(folder / "config.json", json.dumps(payload))
        return folder

    @classmethod
    def load(cls, folder: str | Path, adata: AnnData) -> FusionModel:
        """Load a saved model onto ``adata`` (genes aligned by name; missing ones reported).

        Never unpickles: weights are safetensors, the rest JSON.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        cfg_path, weights = folder / "config.json", folder / "model.safetensors"
        if not cfg_path.is_file() or not weights.is_file():
            msg = f"{folder} is not a saved FusionModel (needs config.json and model.safetensors)."
            raise KbfmInputError(msg)
        try:
            payload = json.loads(cfg_path.read_text())
            config = FusionConfig(**payload["config"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            msg = f"{cfg_path} is not a valid FusionModel config: {err}"
            raise KbfmInputError(msg) from None
        model = cls(adata, config, np.asarray(payload["gene_text"], dtype=np.float32))
        model._build()
        try:
            model.module.load_state_dict(load_file(str(weights)))
        except (RuntimeError, SafetensorError) as err:
            msg = f"Weights in {weights} do not fit the saved config: {str(err)[:300]}"
            raise KbfmInputError(msg) from None
        if model.missing_genes:
            import logging

            logging.getLogger("kbfm").warning(
                "%d of the model's %d genes are missing from this data (filled with the "
                "training mean): %s",
                len(model.missing_genes),
                len(config.genes),
                preview(model.missing_genes),
            )
        return model


def _gene_text(genes: list[str], source, encoder, species) -> np.ndarray:
    from ..tl._gene_vectors import gene_vectors

    try:
        return gene_vectors(genes, source=source, encoder=encoder, species=species).matrix
    except KbfmInputError as err:
        import logging

        from ..encoders import get_text_encoder

        logging.getLogger("kbfm").warning(
            "No gene-text knowledge for the model's genes (%s); the decoder will use its "
            "per-gene weights only and cannot impute unmeasured genes.",
            str(err)[:200],
        )

        return np.zeros((len(genes), get_text_encoder(encoder).dim), dtype=np.float32)
