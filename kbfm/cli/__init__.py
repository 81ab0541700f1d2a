"""``kbfm`` command line: each command reads and writes ``.h5ad`` files.

One module per area (``cells``, ``fusion``, ``image``, ``qc``, ``agent``, ``general``,
and the ``models`` / ``knowledge`` sub-apps); this file only builds the app and
registers the commands. Shared options and helpers live in ``_common``.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from . import agent, cells, fusion, general, image, qc
from .knowledge import knowledge_app
from .models import models_app

app = typer.Typer(
    help="kbfm: knowledge-based foundation models for spatial transcriptomics.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if value:
        from .._version import __version__

        typer.echo(f"kbfm {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress.")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bars (also KBFM_PROGRESS=0).")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    from .._settings import settings

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    if quiet:
        settings.progress = False


app.add_typer(knowledge_app, name="knowledge")
app.add_typer(models_app, name="models")
for name, command in (
    ("demo", general.demo),
    ("info", general.info),
    ("embed-genes", cells.embed_genes_cmd),
    ("embed-cells", cells.embed_cells_cmd),
    ("annotate", cells.annotate),
    ("query", cells.query),
    ("ask", agent.ask),
    ("train", fusion.train),
    ("domains", cells.domains),
    ("embed", fusion.embed),
    ("impute", fusion.impute),
    ("serve", general.serve),
    ("embed-image", image.embed_image_cmd),
    ("predict-expression", image.predict_expression_cmd),
    ("qc", qc.qc_cmd),
    ("deconvolve", qc.deconvolve_cmd),
):
    app.command(name)(command)


def main() -> None:
    """Entry point of the ``kbfm`` console script."""
    app()


__all__ = ["app", "main"]
