"""``kbfm demo``, ``kbfm info`` and ``kbfm serve``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ._common import (
    EncoderOpt,
    run_guarded,
)


def demo(
    out_dir: Annotated[
        Path, typer.Option("--out-dir", "-d", help="Folder for results and figures.")
    ] = Path("results/demo"),
    encoder: EncoderOpt = "minilm",
) -> None:
    """Run the offline end-to-end demo on pbmc68k_reduced and write results + figures."""
    from ..demo import run_demo

    metrics = run_guarded(lambda: run_demo(out_dir, encoder=encoder))
    for name in ("zero_shot", "baseline_marker_score"):
        m = metrics[name]
        typer.echo(f"{name:24s} accuracy {m['accuracy']:.3f}  macro-F1 {m['macro_f1']:.3f}")
    typer.echo(f"results in {out_dir}/ (report.md, metrics.json, demo.h5ad, *.png)")


def info(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List registered encoders and knowledge sources, and which load offline here."""
    from .._model_store import MODEL_PACKAGES, is_installed
    from .._version import __version__
    from ..encoders import (
        DEFAULT_IMAGE_ENCODER,
        DEFAULT_TEXT_ENCODER,
        list_image_encoders,
        list_text_encoders,
    )

    rows = []
    for spec in list_text_encoders():
        available = spec.offline
        if spec.name in MODEL_PACKAGES:
            available = is_installed(spec.name)  # the store copy, not a hub fallback
        elif spec.offline:
            try:
                spec.resolve_source()
            except Exception:  # noqa: BLE001 (listed as not available, whatever the reason)
                available = False
        rows.append(
            {
                "registry": "text",
                "name": spec.name,
                "default": spec.name == DEFAULT_TEXT_ENCODER,
                "dim": spec.dim,
                "backend": spec.backend,
                "offline": available,
                "license": spec.license,
                "description": spec.description,
            }
        )
    for spec in list_image_encoders():
        rows.append(
            {
                "registry": "image",
                "name": spec.name,
                "default": spec.name == DEFAULT_IMAGE_ENCODER,
                "dim": spec.dim,
                "backend": spec.backend,
                "offline": spec.offline,
                "gated": spec.gated,
                "license": spec.license,
                "description": spec.description,
            }
        )
    from ..encoders.llm import DEFAULT_LLM, LLM_SPECS, smollm2_folder

    for name, description in LLM_SPECS.items():
        offline, backend, licence = True, "none", ""
        if name == "smollm2":
            backend, licence = "transformers (GGUF)", "Apache-2.0"
            try:
                smollm2_folder()
            except Exception:  # noqa: BLE001 (listed as not available, whatever the reason)
                offline = False
        elif name in MODEL_PACKAGES:
            backend = "transformers (GGUF -> bf16 safetensors cache)"
            licence = MODEL_PACKAGES[name].license
            offline = is_installed(name)
        rows.append(
            {
                "registry": "llm",
                "name": name,
                "default": name == DEFAULT_LLM,
                "dim": 0,
                "backend": backend,
                "offline": offline,
                "installed": offline,
                "license": licence,
                "description": description,
            }
        )
    from ..knowledge.status import knowledge_status

    sources = knowledge_status()
    if as_json:
        payload = {
            "version": __version__,
            "text_encoders": [r for r in rows if r["registry"] == "text"],
            "image_encoders": [r for r in rows if r["registry"] == "image"],
            "llms": [r for r in rows if r["registry"] == "llm"],
            "gene_knowledge": sources,
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for registry, note in (
        (
            "text",
            "Also accepted: st:<hub id or path>, hf:<hub id or path> (LLM mean pooling), "
            "openai:<model>.",
        ),
        (
            "image",
            "Also accepted: timm:<name>, hf-hub:<id>, or weights=<local file>; gated "
            "models read HF_TOKEN from the environment.",
        ),
        (
            "llm",
            "Also accepted: hf:<hub id or path>, openai:<model> with --base-url / base_url= "
            "(vLLM, llama.cpp, Ollama, hosted APIs).",
        ),
    ):
        title = "LLMs" if registry == "llm" else f"{registry} encoders"
        table = Table(title=f"kbfm {__version__}: {title}")
        for col in ("name", "dim", "backend", "loads offline here", "license", "description"):
            table.add_column(col)
        for r in rows:
            if r["registry"] != registry:
                continue
            if r["offline"]:
                where = "yes"
            else:
                where = "gated: token or local weights" if r.get("gated") else "needs download/API"
            table.add_row(
                r["name"] + (" (default)" if r["default"] else ""),
                str(r["dim"]),
                r["backend"],
                where,
                r["license"],
                r["description"],
            )
        console.print(table)
        console.print(note)
    ks = Table(title="knowledge sources")
    for col in ("name", "found", "coverage", "note"):
        ks.add_column(col)
    for s in sources:
        ks.add_row(s["name"], "yes" if s["found"] else "no", json.dumps(s["counts"]), s["note"])
    console.print(ks)


def serve(
    host: Annotated[
        str,
        typer.Option(help="Address to bind: 127.0.0.1 is this machine only; 0.0.0.0 exposes it."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 7860,
    max_upload_mb: Annotated[float, typer.Option(help="Largest .h5ad upload (MB).")] = 200.0,
) -> None:
    r"""Start the local web app (Gradio; needs `pip install 'kbfm\[web]'`). See docs/web.md."""

    def go():
        from ..web import serve as serve_app

        serve_app(
            host=host,
            port=port,
            max_upload_mb=max_upload_mb,
            on_start=lambda url: typer.echo(f"kbfm web app on {url} (Ctrl-C to stop)"),
        )

    run_guarded(go)
