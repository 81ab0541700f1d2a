"""Options and helpers shared by the ``kbfm`` commands (no commands here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

InPath = Annotated[Path, typer.Argument(help="Input .h5ad file.")]


OutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        help="Output .h5ad. Default: <input>.kbfm.h5ad next to the input (your file is "
        "never overwritten unless you pass its path here; a .kbfm.h5ad input is updated).",
    ),
]


EncoderOpt = Annotated[str, typer.Option(help="Text encoder (see `kbfm info`).")]


SourceOpt = Annotated[
    str,
    typer.Option(
        help="Gene knowledge: atlas (offline, every gene), builtin, ncbi, or a JSON/TSV/CSV path."
    ),
]


SpeciesOpt = Annotated[str, typer.Option(help="auto (from gene names), human or mouse.")]


LayerOpt = Annotated[str | None, typer.Option(help="Read expression from this layer.")]


RawOpt = Annotated[bool, typer.Option("--use-raw", help="Read expression from adata.raw.")]


TimeoutOpt = Annotated[
    float | None,
    typer.Option(
        min=0.001,
        help="Seconds to wait per request to an OpenAI-compatible server "
        "(default 60, or KBFM_HTTP_TIMEOUT); 5 attempts with back-off.",
    ),
]


def output_path(path: Path, out: Path | None) -> Path:
    """Where a command writes: ``out``, else ``<stem>.kbfm.h5ad`` next to ``path``.

    A ``.kbfm.h5ad`` input (kbfm's own output) maps onto itself, so commands chain:
    ``kbfm embed-genes data.h5ad`` writes ``data.kbfm.h5ad`` and ``kbfm embed-cells
    data.kbfm.h5ad`` updates it. The user's own file is replaced only when ``out``
    names it.
    """
    if out is not None:
        return out
    return path.with_name(f"{sample_name(path)}.kbfm.h5ad")


def sample_name(path: Path) -> str:
    """``top`` for ``top.h5ad`` and for kbfm's own output ``top.kbfm.h5ad``."""
    for suffix in (".kbfm.h5ad", ".h5ad"):
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def run_guarded(fn):
    """Run ``fn`` turning kbfm input errors into a one-line message and exit code 2."""
    from .._errors import KbfmInputError, KbfmUnavailableError

    try:
        return fn()
    except (KbfmInputError, KbfmUnavailableError) as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from None
    except KeyboardInterrupt as err:
        detail = f": {err}" if str(err) else "; no output was written."
        typer.secho(f"interrupted{detail}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=130) from None


def server_options(llm: str, base_url: str | None, timeout: float | None) -> dict:
    """Backend options from the CLI; ``--timeout`` only means something for servers."""
    from .._errors import KbfmInputError

    options: dict = {"base_url": base_url} if base_url else {}
    if timeout is not None:
        if not llm.startswith("openai:"):
            msg = f"--timeout applies to openai:<model> servers, not to --llm {llm}."
            raise KbfmInputError(msg)
        options["timeout"] = timeout
    return options


def read_plan(path: Path) -> list[tuple[str, dict]]:
    """A ``--plan`` file: a JSON list of ``[tool name, {arguments}]`` pairs."""
    from .._errors import KbfmInputError

    if not path.is_file():
        msg = f"--plan file not found: {path}"
        raise KbfmInputError(msg)
    try:
        steps = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        msg = f"--plan {path} is not valid JSON ({err})."
        raise KbfmInputError(msg) from None
    example = '[["run_qc", {}], ["find_domains", {"n_domains": 4}]]'
    if not isinstance(steps, list):
        msg = f"--plan {path} must hold a JSON list of [tool, {{arguments}}] pairs, e.g. {example}."
        raise KbfmInputError(msg)
    plan = []
    for index, step in enumerate(steps, start=1):
        ok = (
            isinstance(step, list)
            and len(step) == 2
            and isinstance(step[0], str)
            and isinstance(step[1], dict)
        )
        if not ok:
            msg = (
                f"--plan {path}: step {index} is {json.dumps(step)[:80]}; each step must be "
                f"[tool name, {{arguments}}], e.g. {example}."
            )
            raise KbfmInputError(msg)
        plan.append((step[0], step[1]))
    return plan


def roundtrip(path: Path, out: Path | None, step) -> None:
    from ..io import read_h5ad, write_h5ad

    def go():
        adata = read_h5ad(path)
        step(adata)
        dest = write_h5ad(adata, output_path(path, out))
        typer.echo(f"wrote {dest}")

    run_guarded(go)
