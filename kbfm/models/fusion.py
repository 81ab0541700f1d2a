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
from .._validate import expression_matrix
from .._version import __version__
from ._graph import spot_graph

LATENT_KEY = "X_kbfm"
ENCODERS = ("mlp", "gcn")  # expression encoders of kbfm.models._module


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
    """Trainable fusion of expression, gene-text knowledge and histology (see module docs)."""

    def __init__(self, adata: AnnData, config: FusionConfig, gene_text: np.ndarray) -> None:
        self.adata = adata
        self.config = config
        self.gene_text = gene_text.astype(np.float32)
        self.module = None
        self.history: list[dict] = []
        self.loaded_from: str | None = None
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
        encoder: str = "mlp",
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
        encoder
            Expression encoder: ``"mlp"`` (default) or ``"gcn"`` (its first layer a graph
            convolution over the spot graph, GraphST/STAGATE-style).
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
        if encoder not in ENCODERS:
            msg = f"encoder must be one of {list(ENCODERS)}, got {encoder!r}."
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
        _warn_when_knowledge_is_thin(gene_text, knowledge_source)
        d_gt = (
            adata.obsm["X_genetext"].shape[1] if use_genetext and "X_genetext" in adata.obsm else 0
        )
        d_im = adata.obsm["X_image"].shape[1] if use_image and "X_image" in adata.obsm else 0
        config = FusionConfig(
            genes=genes,
            preset=preset,
            n_neighbors=n_neighbors,
            graph_hops=graph_hops,
            encoder=encoder,
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
            trained_on=_describe_data(adata),
        )
        return cls(adata, config, gene_text)

    def _prepare(self, adata: AnnData) -> None:
        from ._inputs import SpotInputs

        cfg = self.config
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

    # ---------------------------------------------------------------- save / load
    def save(self, folder: str | Path) -> Path:
        """Save weights (safetensors) and config (JSON) into ``folder``."""
        from safetensors.torch import save_file

        self._require_trained()
        folder = Path(folder)
        state = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        atomic_write(folder / "model.safetensors", lambda tmp: save_file(state, tmp))
        np_text = self.gene_text.tolist()
        config = asdict(self.config)
        config["epochs_trained"] = self.config.epochs_trained + len(self.history)
        payload = {"config": config, "gene_text": np_text}
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
        import logging

        log = logging.getLogger("kbfm")
        if model.missing_genes:
            log.warning(
                "%d of the model's %d genes are missing from this data (filled with the "
                "training mean): %s",
                len(model.missing_genes),
                len(config.genes),
                preview(model.missing_genes),
            )
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

        Returns
        -------
        The loaded model (``model.describe_transfer()`` says what was matched).

        Examples
        --------
        >>> model = FusionModel.embed("model/", other_slice)  # doctest: +SKIP
        >>> kbfm.tl.domains(other_slice, n_domains=7)  # doctest: +SKIP
        """
        model = cls.load(folder, adata)
        model.to_adata(key_added, batch_size=batch_size)
        return model


def _gene_text(genes: list[str], source, encoder, species) -> np.ndarray:
    from ..knowledge._gene_vectors import gene_vectors

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


KNOWLEDGE_WARN_FRACTION = 0.2


def _describe_data(adata: AnnData) -> dict:
    """What the model was trained on, for provenance (no data, only a fingerprint)."""
    import hashlib

    names = "\n".join(map(str, adata.obs_names)).encode()
    return {
        "n_spots": int(adata.n_obs),
        "n_genes": int(adata.n_vars),
        "library_ids": sorted(map(str, adata.uns.get("spatial", {}) or {})),
        "obs_names_sha256": hashlib.sha256(names).hexdigest()[:16],
        "filename": str(adata.filename) if adata.isbacked else None,
    }


def _warn_when_knowledge_is_thin(gene_text: np.ndarray, source) -> None:
    """Say so when few of the model's genes carry gene text (the knowledge view is idle)."""
    import logging

    with_text = int((np.abs(gene_text).sum(1) > 0).sum())
    if with_text and with_text < KNOWLEDGE_WARN_FRACTION * len(gene_text):
        logging.getLogger("kbfm").warning(
            "Only %d of the model's %d genes (%.0f%%) carry gene text in knowledge source "
            "%r, so the knowledge-conditioned decoder rests on few genes; "
            "knowledge_source='atlas' has a card for every gene.",
            with_text,
            len(gene_text),
            100 * with_text / len(gene_text),
            str(source),
        )
