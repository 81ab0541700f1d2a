"""FusionModel: fuse expression, gene knowledge and histology into one spatial representation.

Lifecycle (scvi-tools style)::

    FusionModel.setup_anndata(adata, gene_selection="spatial")  # adata.uns["_kbfm_fusion_setup"]
    model = FusionModel(adata, preset="base")                   # or FusionModel.setup(adata, ...)
    model.train()                                               # again: continues from here
    adata.obsm["X_kbfm"] = model.get_latent_representation()
    model.save("my_model/")                                     # overwrite=True to replace
    model = FusionModel.load("my_model/", new_adata)            # genes matched by name
    table = model.impute(["CD3E", "FOXP3"])                     # what kbfm.tl.impute stores

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

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from anndata import AnnData

from .._atomic import atomic_write_files
from .._dask import dask_matrix
from .._errors import KbfmInputError, preview
from .._keys import CELL_TEXT_KEY, IMAGE_KEY, LATENT_KEY
from .._provenance import record_step
from .._settings import settings
from .._validate import check_unique_names, expression_matrix
from .._version import __version__
from ._graph import spot_graph
from ._options import (  # ENCODERS and KNOWLEDGE_WARN_FRACTION: kept importable from here
    ENCODERS,  # noqa: F401
    KNOWLEDGE_WARN_FRACTION,  # noqa: F401
    OBJECTIVES,  # noqa: F401
    check_encoder,
    check_neighbour_objective,
    check_preset,
    describe_data,
    gene_text_matrix,
    objective_weights,
    warn_when_knowledge_is_thin,
)
from ._setup import SETUP_KEY, read_setup, resolve_gene_selection, setup_anndata

if TYPE_CHECKING:
    import pandas as pd


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
    encoder: str = "mlp"
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
    trained_on: dict = field(default_factory=dict)
    epochs_trained: int = 0
    kbfm_version: str = __version__


class FusionModel:
    """Trainable fusion of expression, gene-text knowledge and histology (see module docs).

    Build it scvi-tools style: register the data with :meth:`setup_anndata`, then
    construct the model on it (or do both with :meth:`setup`).

    Parameters
    ----------
    adata
        Data registered by :meth:`setup_anndata` (its record in
        ``adata.uns["_kbfm_fusion_setup"]`` must still fit: same spots, registered genes
        present); ``obsm["spatial"]`` is needed when the neighbour objective is on.
    preset
        ``"tiny"``, ``"base"`` or ``"large"`` (:data:`PRESETS`).
    objectives
        ``None``: reconstruction, contrastive and neighbour, each with weight 1. A list
        of those names turns on the listed ones (weight 1); a mapping name -> weight
        (>= 0) sets weights. Objectives not named are off. The contrastive one needs
        ``obsm["X_image"]`` and is off without it.
    encoder
        Expression encoder: ``"mlp"`` or ``"gcn"`` (its first layer a graph convolution
        over the spot graph, GraphST/STAGATE-style).
    graph_hops
        Rounds of neighbour averaging in the encoder (0 = none).
    knowledge_source, text_encoder, species
        Gene knowledge for the text-conditioned decoder (see ``kbfm.tl.embed_genes``).
    seed
        Seed for initialisation, masks and splits.

    Raises
    ------
    KbfmInputError
        When ``adata`` was not set up (call :meth:`setup_anndata` first), or an option
        is not valid.

    Examples
    --------
    >>> FusionModel.setup_anndata(adata, gene_selection="spatial")  # doctest: +SKIP
    >>> objectives = ["reconstruction", "neighbour"]  # doctest: +SKIP
    >>> model = FusionModel(adata, preset="tiny", objectives=objectives)  # doctest: +SKIP
    >>> model.train().to_adata()  # doctest: +SKIP
    """

    def __init__(
        self,
        adata: AnnData,
        *,
        preset: str = "base",
        objectives: Sequence[str] | Mapping[str, float] | None = None,
        encoder: str = "mlp",
        graph_hops: int = 2,
        knowledge_source: str = "builtin",
        text_encoder: str = "minilm",
        species: str = "human",
        seed: int = 0,
    ) -> None:
        check_preset(preset, PRESETS)
        weights = objective_weights(objectives)
        check_encoder(encoder)
        record = read_setup(adata)
        check_neighbour_objective(adata, weights["neighbour"])
        genes = record["genes"]
        gene_text = gene_text_matrix(genes, knowledge_source, text_encoder, species)
        warn_when_knowledge_is_thin(gene_text, knowledge_source)
        d_gt = record["views"].get(CELL_TEXT_KEY, 0)
        d_im = record["views"].get(IMAGE_KEY, 0)
        config = FusionConfig(
            genes=genes,
            preset=preset,
            n_neighbors=int(record["n_neighbors"]),
            graph_hops=graph_hops,
            encoder=encoder,
            gene_selection=str(record["gene_selection"]),
            use_genetext=bool(record["use_genetext"]),
            use_image=bool(record["use_image"]),
            d_genetext=int(d_gt),
            d_image=int(d_im),
            w_reconstruction=weights["reconstruction"],
            w_contrastive=weights["contrastive"] if d_im else 0.0,
            w_neighbour=weights["neighbour"],
            layer=record["layer"],
            knowledge_source=str(knowledge_source),
            text_encoder=str(text_encoder),
            species=species,
            gene_mean=np.asarray(record["gene_mean"]).tolist(),
            gene_std=np.asarray(record["gene_std"]).tolist(),
            input_was_counts=bool(record["input_was_counts"]),
            seed=seed,
            trained_on=describe_data(adata),
        )
        self._init(adata, config, gene_text)

    def _init(self, adata: AnnData, config: FusionConfig, gene_text: np.ndarray) -> None:
        self.adata = adata
        self.config = config
        self.gene_text = gene_text.astype(np.float32)
        self.module = None
        self.history: list[dict] = []
        self.loaded_from: str | None = None
        self._prepare(adata)

    @classmethod
    def _from_config(
        cls, adata: AnnData, config: FusionConfig, gene_text: np.ndarray
    ) -> FusionModel:
        """A model rebuilt from a saved config (no setup record needed)."""
        model = cls.__new__(cls)
        model._init(adata, config, gene_text)
        return model

    # ---------------------------------------------------------------- setup
    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        *,
        layer: str | None = None,
        n_top_genes: int = 2000,
        gene_selection: str = "auto",
        use_genetext: bool = True,
        use_image: bool = True,
        n_neighbors: int = 6,
    ) -> None:
        """Register ``adata`` for FusionModel: check it, choose the genes, record the views.

        Writes one h5ad-safe record to ``adata.uns["_kbfm_fusion_setup"]`` (the genes,
        their log-normalised means and scales, the layer, the ``obsm`` views and their
        widths, the spot count); :class:`FusionModel` reads it. Call it again after
        subsetting or changing the data.

        Parameters
        ----------
        adata
            Counts or log-normalised expression, at least 20 spots.
        layer
            Read expression from this layer (default ``X``).
        n_top_genes
            Genes used as input and reconstruction targets.
        gene_selection
            How those genes are chosen: ``"spatial"`` (highest Moran's I over the spot
            graph, :func:`kbfm.pp.spatially_variable_genes`), ``"hvg"`` (scanpy highly
            variable genes) or ``"auto"`` (spatial when ``obsm['spatial']`` is present).
        use_genetext, use_image
            Use ``obsm["X_genetext"]`` / ``obsm["X_image"]`` when present.
        n_neighbors
            Spatial neighbours per spot (6 suits the Visium hexagonal grid), for the
            Moran's I gene selection and the model's spot graph.

        Examples
        --------
        >>> FusionModel.setup_anndata(adata, layer="counts", n_top_genes=1000)  # doctest: +SKIP
        >>> adata.uns["_kbfm_fusion_setup"]["gene_selection"]  # doctest: +SKIP
        'spatial'
        """
        import logging

        record = setup_anndata(
            adata,
            layer=layer,
            n_top_genes=n_top_genes,
            gene_selection=gene_selection,
            use_genetext=use_genetext,
            use_image=use_image,
            n_neighbors=n_neighbors,
        )
        logging.getLogger("kbfm").info(
            "FusionModel.setup_anndata: %d genes (%s) from %s, views %s; recorded in "
            "adata.uns[%r].",
            len(record["genes"]),
            record["gene_selection"],
            f"layers[{layer!r}]" if layer is not None else "X",
            ["expression", *record["views"]],
            SETUP_KEY,
        )

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
        encoder: str = "mlp",
        knowledge_source: str = "builtin",
        text_encoder: str = "minilm",
        species: str = "human",
        seed: int = 0,
    ) -> FusionModel:
        """Set up ``adata`` and build a model in one step.

        The same as :meth:`setup_anndata` with the data options, then
        ``FusionModel(adata, ...)`` with the model options (objective weights as
        ``w_*``); same seed, same model.

        Parameters
        ----------
        adata
            Counts or log-normalised expression; ``obsm["spatial"]`` is needed when
            ``w_neighbour > 0`` (and used for graph mixing when present).
        preset
            ``"tiny"``, ``"base"`` or ``"large"``.
        n_top_genes, gene_selection, layer, use_genetext, use_image, n_neighbors
            Data options, see :meth:`setup_anndata`.
        w_reconstruction, w_contrastive, w_neighbour
            Objective weights (0 switches an objective off).
        graph_hops, encoder, knowledge_source, text_encoder, species, seed
            Model options, see :class:`FusionModel`.

        Returns
        -------
        An untrained :class:`FusionModel`.

        Examples
        --------
        >>> model = FusionModel.setup(adata, preset="tiny").train()  # doctest: +SKIP
        """
        check_preset(preset, PRESETS)
        for name, w in (
            ("w_reconstruction", w_reconstruction),
            ("w_contrastive", w_contrastive),
            ("w_neighbour", w_neighbour),
        ):
            if w < 0:
                msg = f"{name} must be >= 0, got {w}."
                raise KbfmInputError(msg)
        check_encoder(encoder)
        resolve_gene_selection(adata, gene_selection)
        check_neighbour_objective(adata, w_neighbour)
        cls.setup_anndata(
            adata,
            layer=layer,
            n_top_genes=n_top_genes,
            gene_selection=gene_selection,
            use_genetext=use_genetext,
            use_image=use_image,
            n_neighbors=n_neighbors,
        )
        return cls(
            adata,
            preset=preset,
            objectives={
                "reconstruction": w_reconstruction,
                "contrastive": w_contrastive,
                "neighbour": w_neighbour,
            },
            encoder=encoder,
            graph_hops=graph_hops,
            knowledge_source=knowledge_source,
            text_encoder=text_encoder,
            species=species,
            seed=seed,
        )

    def __repr__(self) -> str:
        cfg = self.config
        p = PRESETS[cfg.preset]
        on = {
            "reconstruction": cfg.w_reconstruction,
            "contrastive": cfg.w_contrastive,
            "neighbour": cfg.w_neighbour,
        }
        objectives = ", ".join(f"{k} {w:g}" for k, w in on.items() if w > 0) or "none"
        if self.module is None:
            state = "not trained"
        else:
            parts = []
            if self.loaded_from:
                parts.append(f"loaded from {self.loaded_from} ({cfg.epochs_trained} epochs)")
            if self.history:
                calls = self._train_calls
                parts.append(
                    f"{len(self.history)} epochs here in {calls} train() call"
                    + ("s" if calls != 1 else "")
                )
            state = "; ".join(parts) or "weights built, no epochs yet"
        return (
            f"FusionModel preset {cfg.preset!r} (latent {p.latent}, hidden {p.hidden}, "
            f"depth {p.depth}), encoder {cfg.encoder!r}, {len(cfg.genes):,} genes "
            f"({cfg.gene_selection}), {self.n_obs:,} spots\n"
            f"  views: {', '.join(['expression', *self.views])}\n"
            f"  objectives: {objectives}\n"
            f"  training: {state}"
        )

    @property
    def is_trained(self) -> bool:
        """Whether the model has weights (trained here or loaded)."""
        return self.module is not None

    def _prepare(self, adata: AnnData) -> None:
        from ._inputs import SpotInputs

        cfg = self.config
        lazy = dask_matrix(adata, layer=cfg.layer)  # a dask X is read block by block
        if lazy is not None:
            X, names, _ = lazy
            check_unique_names(names, "adata.var_names")
        else:
            X, names = expression_matrix(adata, layer=cfg.layer)
        self._inputs = SpotInputs(X, names, cfg.genes, cfg.gene_mean, cfg.gene_std)
        if len(self._inputs.missing) == len(cfg.genes):
            msg = (
                f"None of the model's {len(cfg.genes)} genes are in this data; "
                f"e.g. {preview(cfg.genes)}."
            )
            raise KbfmInputError(msg)
        self.missing_genes = self._inputs.missing
        self.views = {}
        for key, dim, on in (
            (CELL_TEXT_KEY, cfg.d_genetext, cfg.use_genetext),
            (IMAGE_KEY, cfg.d_image, cfg.use_image),
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
        self.coords = (
            np.asarray(adata.obsm["spatial"], dtype=np.float64) if "spatial" in adata.obsm else None
        )
        self.adjacency, self.graph_source = spot_graph(adata, cfg.n_neighbors)
        self._split = None
        self._train_calls = 0

    @property
    def n_obs(self) -> int:
        """Number of spots of the data the model is set up on."""
        return self._inputs.n_obs

    def inputs_for(self, spots: np.ndarray | None = None) -> np.ndarray:
        """Standardised expression inputs of ``spots`` (all when ``None``), float32."""
        return self._inputs.rows(spots)

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
            encoder=self.config.encoder,
        )

    def train(
        self,
        *,
        max_epochs: int | None = None,
        lr: float = 2e-3,
        validation_fraction: float = 0.1,
        patience: int | None = None,
        batch_size: int | str | None = "auto",
        reset: bool = False,
        device: str | None = None,
    ) -> FusionModel:
        """Train with AdamW and early stopping on the held-out reconstruction loss.

        A second call continues from the current weights (same held-out spots, history
        appended, epochs numbered on); ``reset=True`` starts again from a fresh
        initialisation and clears the history.

        Parameters
        ----------
        max_epochs
            Upper bound on epochs; ``None``: 300 full-batch, or about as many optimiser
            steps in mini-batch epochs (at least 20).
        lr
            Learning rate (a fresh AdamW optimiser every call).
        validation_fraction
            Spots held out for early stopping: one fixed mask hides the same entries of
            these spots every epoch, and their loss on those entries is the stopping score.
        patience
            Epochs without validation improvement before stopping; ``None``: 40
            full-batch, or about as many steps in mini-batch epochs (at least 5).
        batch_size
            Spots per optimiser step. ``None``: all spots (full batch); an integer: compact
            spatial tiles of that many spots, each with the spots within its receptive
            field, so memory is bounded by the batch, not by the data (larger than the
            data: full batch); ``"auto"``: full batch up to 20,000 spots, else 2,048.
        reset
            Re-initialise the weights (and clear ``history``) before training.
        device
            ``"cpu"``, ``"cuda"`` or ``None`` (``kbfm.settings``).

        Returns
        -------
        ``self``; one entry per epoch in ``self.history`` (losses, held-out loss,
        optimiser steps, seconds).
        """
        from tqdm.auto import tqdm

        from ._training import fit, resolve_batch_size

        if batch_size != "auto" and batch_size is not None:
            if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
                msg = f"batch_size must be None, 'auto' or an integer >= 2, got {batch_size!r}."
                raise KbfmInputError(msg)
        resolved = resolve_batch_size(batch_size, self.n_obs)
        if isinstance(batch_size, int) and resolved is None:
            import logging

            logging.getLogger("kbfm").info(
                "batch_size=%d >= %d spots: training full-batch.", batch_size, self.n_obs
            )
        device = device or settings.resolve_device()
        if self.module is None or reset:
            self._build()
            self.history, self._split, self._train_calls = [], None, 0
        self.module = self.module.to(device)
        cfg = self.config
        started = time.perf_counter()

        def progress(it):
            return tqdm(it, desc=f"FusionModel[{cfg.preset}]", disable=not settings.progress)

        fit(
            self,
            batch_size=resolved,
            max_epochs=max_epochs,
            patience=patience,
            lr=lr,
            validation_fraction=validation_fraction,
            device=device,
            progress=progress,
        )
        self._train_calls += 1
        self.batch_size = resolved
        self.train_seconds = time.perf_counter() - started
        return self

    def _require_trained(self):
        if self.module is None:
            msg = "The model is not trained yet: call model.train() (or FusionModel.load)."
            raise KbfmInputError(msg)

    def get_latent_representation(self, *, batch_size: int | None = 16384) -> np.ndarray:
        """Return the fused latent of every spot, ``(n_obs, latent)``, float32.

        Parameters
        ----------
        batch_size
            Spots per chunk: compact spatial tiles, each computed with the spots within
            the model's receptive field, so the result equals the all-at-once one (to
            float rounding) while memory grows with the chunk, not with the data.
            ``None``: all spots at once.

        Returns
        -------
        The latent, one row per spot in ``adata`` order.
        """
        import torch

        from ._graph import spatial_tiles
        from ._training import Batches

        self._require_trained()
        module = self.module.eval()
        device = next(module.parameters()).device
        batches = Batches(self, device)
        n = self.n_obs
        if batch_size is None or batch_size >= n:
            tiles = [None]
        elif self.coords is not None:
            tiles = spatial_tiles(self.coords, batch_size)
        else:
            tiles = [np.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
        out = np.empty((n, PRESETS[self.config.preset].latent), dtype=np.float32)
        with torch.inference_mode():
            for seeds in tiles:
                nodes = None if seeds is None else batches.nodes(seeds)
                x, gt, im, adj = batches.tensors(nodes)
                z = module.fuse(module.encode_views(x, gt, im, adj), adj).cpu().numpy()
                if seeds is None:
                    out[:] = z
                else:
                    out[seeds] = z[: len(seeds)]
        return out

    def to_adata(self, key_added: str = LATENT_KEY, *, batch_size: int | None = 16384) -> None:
        """Write the latent into ``adata.obsm[key_added]`` (streamed in chunks) with provenance.

        Parameters
        ----------
        key_added
            ``obsm`` key written.
        batch_size
            Spots per inference chunk (see :meth:`get_latent_representation`).
        """
        self.adata.obsm[key_added] = self.get_latent_representation(batch_size=batch_size)
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
            graph=self.graph_source,
            batch_size=getattr(self, "batch_size", None),
            seed=self.config.seed,
            epochs=self.config.epochs_trained + len(self.history),
            epochs_on_this_data=len(self.history),
            model_dir=self.loaded_from,
            trained_on=self.config.trained_on,
            genes_matched=len(self.config.genes) - len(self.missing_genes),
        )

    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        self._require_trained()
        return sum(p.numel() for p in self.module.parameters() if p.requires_grad)

    # ---------------------------------------------------------------- imputation
    def impute(self, genes: list[str]) -> pd.DataFrame:
        """Predict expression of ``genes`` for every spot (:func:`kbfm.tl.impute` stores it).

        Genes of the model's panel are decoded with their learned weights and returned as
        log-normalised values; genes outside it that have knowledge text are decoded from
        their text embedding only and returned as z-scores (their scale was never
        observed); genes with neither are refused by name.

        Parameters
        ----------
        genes
            Genes to predict.

        Returns
        -------
        Spots x genes (one column per distinct gene, in the order given), indexed by
        ``adata.obs_names``.

        Examples
        --------
        >>> table = model.impute(["CD3E", "FOXP3"])  # doctest: +SKIP
        """
        from ._impute import impute_genes

        return impute_genes(self, genes)

    # ---------------------------------------------------------------- save / load
    def save(self, folder: str | Path, *, overwrite: bool = False) -> Path:
        """Save weights (safetensors) and config (JSON) into ``folder``.

        The genes' text embeddings are stored once, in the weights file.

        Parameters
        ----------
        folder
            Created when missing.
        overwrite
            Write into an existing folder that holds files. Without it such a folder is
            refused, except one holding exactly an earlier saved model, which is
            replaced with a ``FutureWarning`` (a future version will refuse it too).

        Returns
        -------
        ``folder``.

        Examples
        --------
        >>> model.save("model/", overwrite=True)  # doctest: +SKIP
        """
        from safetensors.torch import save_file

        from ._persist import CONFIG_FILE, WEIGHTS_FILE, check_save_folder, write_config

        self._require_trained()
        folder = check_save_folder(folder, overwrite=overwrite)
        state = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        config = asdict(self.config)
        config["epochs_trained"] = self.config.epochs_trained + len(self.history)
        # Both files are written completely before either is moved into place, so an
        # error or Ctrl-C never leaves weights without their config (or an old config).
        atomic_write_files(
            {
                folder / WEIGHTS_FILE: lambda tmp: save_file(state, tmp),
                folder / CONFIG_FILE: lambda tmp: write_config(tmp, config),
            }
        )
        return folder

    @classmethod
    def load(
        cls, folder: str | Path, adata: AnnData, *, allow_missing_genes: bool = True
    ) -> FusionModel:
        """Load a saved model onto ``adata``, its genes matched by name.

        Like scvi-tools, loading checks the new data's ``var_names`` against the model's
        genes; order does not matter (genes are matched by name). Missing genes are
        filled with the training mean and the log says how many (``allow_missing_genes=
        False`` refuses them instead); data with none of the genes is refused. Never
        unpickles: weights are safetensors, the rest JSON. Folders saved by earlier
        versions (gene text embeddings in ``config.json``) load too.

        Parameters
        ----------
        folder
            A folder written by :meth:`save`.
        adata
            The data to apply the model to.
        allow_missing_genes
            Accept data lacking some of the model's genes.

        Returns
        -------
        The model, trained (``describe_transfer()`` says what was matched).

        Examples
        --------
        >>> FusionModel.load("model/", new_adata, allow_missing_genes=False)  # doctest: +SKIP
        """
        import logging

        from safetensors import SafetensorError

        from ._persist import WEIGHTS_FILE, check_gene_match, read_folder

        folder = Path(folder)
        fields, state, gene_text = read_folder(folder)
        try:
            config = FusionConfig(**fields)
        except TypeError as err:
            msg = f"{folder / 'config.json'} is not a valid FusionModel config: {err}"
            raise KbfmInputError(msg) from None
        model = cls._from_config(adata, config, gene_text)
        note = check_gene_match(
            folder, config.genes, model.missing_genes, allow_missing_genes=allow_missing_genes
        )
        model._build()
        try:
            model.module.load_state_dict(state)
        except (RuntimeError, SafetensorError) as err:
            msg = (
                f"Weights in {folder / WEIGHTS_FILE} do not fit the saved config: {str(err)[:300]}"
            )
            raise KbfmInputError(msg) from None
        log = logging.getLogger("kbfm")
        if note:
            log.warning(note)
        model.loaded_from = str(folder.resolve())
        log.info(model.describe_transfer())
        return model

    def describe_transfer(self) -> str:
        """One line: genes matched in this data and whose scaling the inputs get."""
        cfg, n = self.config, len(self.config.genes)
        trained = cfg.trained_on.get("n_spots")
        where = f"the training slice's ({trained:,} spots)" if trained else "the training data's"
        return (
            f"FusionModel {cfg.preset} from {self.loaded_from or 'memory'}: "
            f"{n - len(self.missing_genes):,} of its {n:,} genes found in this data "
            f"({len(self.missing_genes):,} filled with the training mean); each gene is "
            f"scaled with {where} mean and standard deviation, not re-estimated here."
        )

    @classmethod
    def embed(
        cls,
        folder: str | Path,
        adata: AnnData,
        *,
        key_added: str = LATENT_KEY,
        batch_size: int | None = 16384,
        allow_missing_genes: bool = True,
    ) -> FusionModel:
        """Embed a new slice with a saved model, without retraining.

        Genes are aligned by name (missing ones get the training mean and are reported),
        inputs are scaled with the training data's gene means and scales, the spot graph
        comes from this slice, and ``obsm[key_added]`` is written in streamed chunks with
        provenance naming the model folder and its training data.

        Parameters
        ----------
        folder
            A folder written by :meth:`save`.
        adata
            The new slice (counts or normalised values, ``obsm["spatial"]``).
        key_added
            ``obsm`` key written.
        batch_size
            Spots per inference chunk.
        allow_missing_genes
            Accept a slice lacking some of the model's genes (see :meth:`load`).

        Returns
        -------
        The loaded model (``model.describe_transfer()`` says what was matched).

        Examples
        --------
        >>> model = FusionModel.embed("model/", other_slice)  # doctest: +SKIP
        >>> kbfm.tl.domains(other_slice, n_domains=7)  # doctest: +SKIP
        """
        model = cls.load(folder, adata, allow_missing_genes=allow_missing_genes)
        model.to_adata(key_added, batch_size=batch_size)
        return model
