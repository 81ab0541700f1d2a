"""``kbfm train``, ``kbfm embed`` and ``kbfm impute``: the fusion model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .._keys import LATENT_KEY
from ._choices import GeneSelection, Preset
from ._common import (
    InPath,
    OutOpt,
    SourceOpt,
    roundtrip,
)


def train(
    path: InPath,
    model_dir: Annotated[Path, typer.Option("--model-dir", help="Where to save the model.")],
    out: OutOpt = None,
    preset: Annotated[Preset, typer.Option(help="Model size.")] = Preset.base,
    source: SourceOpt = "atlas",
    max_epochs: Annotated[int, typer.Option(help="Upper bound on epochs.")] = 300,
    gene_selection: Annotated[
        GeneSelection, typer.Option(help="auto, spatial (Moran's I) or hvg.")
    ] = GeneSelection.auto,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Save into --model-dir even if it holds files.")
    ] = False,
) -> None:
    """Train a FusionModel; writes obsm['X_kbfm'] and saves the model."""
    import warnings

    from ..models import FusionModel
    from ..models._persist import check_save_folder

    def step(adata):
        with warnings.catch_warnings():  # said once, when the model is saved
            warnings.simplefilter("ignore", FutureWarning)
            check_save_folder(model_dir, overwrite=overwrite)  # refuse before training
        model = FusionModel.setup(
            adata,
            preset=preset.value,
            knowledge_source=source,
            gene_selection=gene_selection.value,
            seed=seed,
        )
        model.config.trained_on["filename"] = str(path)
        model.train(max_epochs=max_epochs)
        model.to_adata()
        model.save(model_dir, overwrite=overwrite)
        typer.echo(f"trained {preset} ({model.n_parameters():,} parameters); saved to {model_dir}")

    roundtrip(path, out, step)


def embed(
    path: InPath,
    model_dir: Annotated[Path, typer.Option("--model", help="A saved FusionModel folder.")],
    out: OutOpt = None,
    key: Annotated[str, typer.Option(help="obsm key to write.")] = LATENT_KEY,
) -> None:
    """Embed a new slice with a trained FusionModel (no retraining) into obsm['X_kbfm']."""
    from ..models import FusionModel

    def step(adata):
        model = FusionModel.embed(model_dir, adata, key_added=key)
        typer.echo(model.describe_transfer())

    roundtrip(path, out, step)


def impute(
    path: InPath,
    model_dir: Annotated[Path, typer.Option("--model-dir", help="A saved FusionModel.")],
    genes: Annotated[str, typer.Option(help="Comma-separated genes to predict.")],
    out: OutOpt = None,
) -> None:
    """Predict genes (measured or only described) into obsm['kbfm_imputed']."""
    from .. import tl
    from ..models import FusionModel

    def step(adata):
        model = FusionModel.load(model_dir, adata)
        tl.impute(adata, model, genes=[g.strip() for g in genes.split(",") if g.strip()])

    roundtrip(path, out, step)
