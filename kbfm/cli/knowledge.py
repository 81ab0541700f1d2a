"""``kbfm knowledge ...``: gene and cell-type knowledge sources."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import (
    SpeciesOpt,
    run_guarded,
)

knowledge_app = typer.Typer(
    help="Manage gene and cell-type knowledge sources.", no_args_is_help=True
)


@knowledge_app.command("download")
def knowledge_download(
    source: Annotated[str, typer.Argument(help="Only 'ncbi' for now.")],
    species: SpeciesOpt = "human",
    dest: Annotated[Path | None, typer.Option(help="Target folder (default: kbfm cache).")] = None,
) -> None:
    """Download a gene knowledge source for offline use (needs internet)."""
    from .._errors import KbfmInputError
    from ..knowledge.ncbi_download import download_ncbi

    def go():
        if source != "ncbi":
            msg = f"Unknown downloadable source {source!r}; available: ['ncbi']."
            raise KbfmInputError(msg)
        folder = download_ncbi(species=species, dest=dest)
        typer.echo(f"NCBI gene knowledge for {species} in {folder}; use source='ncbi'.")

    run_guarded(go)
