"""``kbfm`` command line: each command reads and writes ``.h5ad`` files."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="kbfm: knowledge-based foundation models for spatial transcriptomics.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
knowledge_app = typer.Typer(
    help="Manage gene and cell-type knowledge sources.", no_args_is_help=True
)
app.add_typer(knowledge_app, name="knowledge")
from .cli_models import models_app  # noqa: E402 - sub-app, light import

app.add_typer(models_app, name="models")

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


def _run(fn):
    """Run ``fn`` turning kbfm input errors into a one-line message and exit code 2."""
    from ._errors import KbfmInputError, KbfmUnavailableError

    try:
        return fn()
    except (KbfmInputError, KbfmUnavailableError) as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from None
    except KeyboardInterrupt as err:
        detail = f": {err}" if str(err) else "; no output was written."
        typer.secho(f"interrupted{detail}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=130) from None


def _server_options(llm: str, base_url: str | None, timeout: float | None) -> dict:
    """Backend options from the CLI; ``--timeout`` only means something for servers."""
    from ._errors import KbfmInputError

    options: dict = {"base_url": base_url} if base_url else {}
    if timeout is not None:
        if not llm.startswith("openai:"):
            msg = f"--timeout applies to openai:<model> servers, not to --llm {llm}."
            raise KbfmInputError(msg)
        options["timeout"] = timeout
    return options


def _read_plan(path: Path) -> list[tuple[str, dict]]:
    """A ``--plan`` file: a JSON list of ``[tool name, {arguments}]`` pairs."""
    from ._errors import KbfmInputError

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


def _roundtrip(path: Path, out: Path | None, step) -> None:
    from .io import read_h5ad, write_h5ad

    def go():
        adata = read_h5ad(path)
        step(adata)
        dest = write_h5ad(adata, output_path(path, out))
        typer.echo(f"wrote {dest}")

    _run(go)


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress.")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bars (also KBFM_PROGRESS=0).")
    ] = False,
):
    from ._settings import settings

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    if quiet:
        settings.progress = False


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("results/demo"),
    encoder: EncoderOpt = "minilm",
) -> None:
    """Run the offline end-to-end demo on pbmc68k_reduced and write results + figures."""
    from .demo import run_demo

    metrics = _run(lambda: run_demo(out, encoder=encoder))
    for name in ("zero_shot", "baseline_marker_score"):
        m = metrics[name]
        typer.echo(f"{name:24s} accuracy {m['accuracy']:.3f}  macro-F1 {m['macro_f1']:.3f}")
    typer.echo(f"results in {out}/ (report.md, metrics.json, demo.h5ad, *.png)")


@app.command()
def info(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List registered encoders and knowledge sources, and which load offline here."""
    from . import __version__
    from ._model_store import MODEL_PACKAGES, is_installed
    from .encoders import (
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
            except Exception:
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
    from .encoders.llm import DEFAULT_LLM, LLM_SPECS, smollm2_folder

    for name, description in LLM_SPECS.items():
        offline, backend, licence = True, "none", ""
        if name == "smollm2":
            backend, licence = "transformers (GGUF)", "Apache-2.0"
            try:
                smollm2_folder()
            except Exception:
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
    from .knowledge.status import knowledge_status

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


@app.command("embed-genes")
def embed_genes_cmd(
    path: InPath,
    out: OutOpt = None,
    source: SourceOpt = "atlas",
    encoder: EncoderOpt = "minilm",
    species: SpeciesOpt = "auto",
) -> None:
    """Embed each gene's knowledge text into varm['kbfm_gene_text']."""
    from . import tl

    _roundtrip(
        path, out, lambda a: tl.embed_genes(a, source=source, encoder=encoder, species=species)
    )


@app.command("embed-cells")
def embed_cells_cmd(
    path: InPath,
    out: OutOpt = None,
    method: Annotated[str, typer.Option(help="genept_w or cell_sentence.")] = "genept_w",
    weighting: Annotated[str, typer.Option(help="expression or relative.")] = "expression",
    layer: LayerOpt = None,
    use_raw: RawOpt = False,
    source: SourceOpt = "atlas",
    encoder: EncoderOpt = "minilm",
    species: SpeciesOpt = "auto",
) -> None:
    """Embed each cell/spot into obsm['X_genetext']."""
    from . import tl

    _roundtrip(
        path,
        out,
        lambda a: tl.embed_cells(
            a,
            method=method,
            weighting=weighting,
            layer=layer,
            use_raw=use_raw,
            source=source,
            encoder=encoder,
            species=species,
        ),
    )


@app.command()
def annotate(
    path: InPath,
    out: OutOpt = None,
    method: Annotated[str, typer.Option(help="zero_shot, marker_score or llm.")] = "zero_shot",
    candidates: Annotated[
        str | None,
        typer.Option(
            help="auto (lineages from --tissue or the data), an ontology branch "
            "(e.g. neuron), 'all', or comma-separated cell types."
        ),
    ] = "auto",
    groupby: Annotated[str | None, typer.Option(help="obs column or 'auto' (Leiden).")] = None,
    layer: LayerOpt = None,
    use_raw: RawOpt = False,
    source: SourceOpt = "atlas",
    encoder: EncoderOpt = "minilm",
    species: SpeciesOpt = "auto",
    llm: Annotated[
        str,
        typer.Option(
            help="For --method llm: smollm2, qwen1.5b, qwen0.5b, hf:<id>, openai:<model>, dry-run."
        ),
    ] = "smollm2",
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible server URL.")] = None,
    tissue: Annotated[
        str | None,
        typer.Option(help="Tissue (e.g. brain, blood): picks auto candidates; named to LLMs."),
    ] = None,
    constrained: Annotated[
        bool | None,
        typer.Option(
            "--constrained/--free-text",
            help="LLM: score candidates by log-likelihood, or answer in free text.",
        ),
    ] = None,
    timeout: TimeoutOpt = None,
) -> None:
    """Annotate cells with Cell Ontology types into obs['kbfm_celltype']."""
    from . import tl

    cands = candidates.split(",") if candidates and "," in candidates else candidates
    if cands == "all":
        cands = None
    llm_kwargs = {}
    if method == "llm":
        llm_kwargs = {
            "llm": llm,
            "llm_options": _run(lambda: _server_options(llm, base_url, timeout)) or None,
            "constrained": constrained,
        }
    _roundtrip(
        path,
        out,
        lambda a: tl.annotate(
            a,
            method=method,
            candidates=cands,
            groupby=groupby,
            layer=layer,
            use_raw=use_raw,
            source=source,
            encoder=encoder,
            species=species,
            tissue=tissue,
            **llm_kwargs,
        ),
    )


@app.command()
def query(
    path: InPath,
    text: Annotated[str, typer.Argument(help="Free-text query, e.g. 'cytotoxic T cell'.")],
    out: OutOpt = None,
    key: Annotated[str | None, typer.Option(help="obs column to write.")] = None,
) -> None:
    """Score every cell against a text query (needs obsm['X_genetext'])."""
    from . import tl

    _roundtrip(path, out, lambda a: tl.query(a, text, key_added=key))


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="Your question in plain language.")],
    data: Annotated[Path | None, typer.Option(help="The .h5ad file to analyse.")] = None,
    llm: Annotated[
        str,
        typer.Option(
            help="smollm2, qwen1.5b / qwen0.5b (after `kbfm models install`), hf:<id>, "
            "openai:<model>, dry-run."
        ),
    ] = "smollm2",
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible server URL.")] = None,
    plan: Annotated[
        Path | None,
        typer.Option(help='JSON list of (tool, arguments) pairs, e.g. \\[["run_qc", {}]].'),
    ] = None,
    max_steps: Annotated[int, typer.Option(help="Most tool calls.")] = 8,
    out: Annotated[Path, typer.Option("--out", "-o", help="Transcript and figures.")] = Path(
        "kbfm_agent"
    ),
    timeout: TimeoutOpt = None,
) -> None:
    """Answer a question by chaining kbfm tools; writes transcript.json and transcript.md."""
    from .agent import ScriptedPolicy, run_agent
    from .io import read_h5ad

    def go():
        adata = read_h5ad(data) if data else None
        if plan is not None:
            policy = ScriptedPolicy(_read_plan(plan))
        else:
            policy = llm
        options = _server_options(llm, base_url, timeout) if plan is None else {}
        transcript, _ = run_agent(
            question, adata=adata, llm=policy, llm_options=options, max_steps=max_steps, out_dir=out
        )
        for step in transcript.steps:
            typer.echo(f"[{step.step}] {step.tool}({step.arguments}) -> {step.result[:160]}")
        typer.echo(f"answer: {transcript.answer or '(none)'}  [{transcript.stop_reason}]")
        typer.echo(f"transcript: {out}/transcript.md")

    _run(go)


@app.command()
def train(
    path: InPath,
    model_dir: Annotated[Path, typer.Option("--model-dir", help="Where to save the model.")],
    out: OutOpt = None,
    preset: Annotated[str, typer.Option(help="tiny, base or large.")] = "base",
    source: SourceOpt = "atlas",
    max_epochs: Annotated[int, typer.Option(help="Upper bound on epochs.")] = 300,
    gene_selection: Annotated[str, typer.Option(help="auto, spatial (Moran's I) or hvg.")] = "auto",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Train a FusionModel; writes obsm['X_kbfm'] and saves the model."""
    from .models import FusionModel

    def step(adata):
        model = FusionModel.setup(
            adata,
            preset=preset,
            knowledge_source=source,
            gene_selection=gene_selection,
            seed=seed,
        )
        model.config.trained_on["filename"] = str(path)
        model.train(max_epochs=max_epochs)
        model.to_adata()
        model.save(model_dir)
        typer.echo(f"trained {preset} ({model.n_parameters():,} parameters); saved to {model_dir}")

    _roundtrip(path, out, step)


@app.command()
def domains(
    path: InPath,
    n_domains: Annotated[int, typer.Option(help="Number of domains.")],
    out: OutOpt = None,
    use_rep: Annotated[str, typer.Option(help="obsm representation.")] = "X_kbfm",
    smooth: Annotated[bool, typer.Option(help="Spatial majority smoothing.")] = False,
    n_pcs: Annotated[int, typer.Option(help="PCs before clustering (0 = none).")] = 0,
    covariance: Annotated[
        str, typer.Option(help="Mixture covariance: tied, full, diag, spherical.")
    ] = "tied",
    n_init: Annotated[int, typer.Option(help="Mixture restarts (best likelihood kept).")] = 10,
    label_key: Annotated[str | None, typer.Option(help="obs labels to score ARI/NMI.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Cluster spots into spatial domains (obs['kbfm_domain'])."""
    from . import tl

    def step(adata):
        tl.domains(
            adata,
            n_domains=n_domains,
            use_rep=use_rep,
            smooth=smooth,
            n_pcs=n_pcs or None,
            covariance=covariance,
            n_init=n_init,
            seed=seed,
        )
        if label_key:
            scores = tl.evaluate_domains(adata, label_key)
            typer.echo(f"ARI {scores['ari']:.3f}  NMI {scores['nmi']:.3f}  ({scores['n']} spots)")

    _roundtrip(path, out, step)


@app.command()
def embed(
    path: InPath,
    model_dir: Annotated[Path, typer.Option("--model", help="A saved FusionModel folder.")],
    out: OutOpt = None,
    key: Annotated[str, typer.Option(help="obsm key to write.")] = "X_kbfm",
) -> None:
    """Embed a new slice with a trained FusionModel (no retraining) into obsm['X_kbfm']."""
    from .models import FusionModel

    def step(adata):
        model = FusionModel.embed(model_dir, adata, key_added=key)
        typer.echo(model.describe_transfer())

    _roundtrip(path, out, step)


@app.command()
def impute(
    path: InPath,
    model_dir: Annotated[Path, typer.Option("--model-dir", help="A saved FusionModel.")],
    genes: Annotated[str, typer.Option(help="Comma-separated genes to predict.")],
    out: OutOpt = None,
) -> None:
    """Predict genes (measured or only described) into obsm['kbfm_imputed']."""
    from . import tl
    from .models import FusionModel

    def step(adata):
        model = FusionModel.load(model_dir, adata)
        tl.impute(adata, model, genes=[g.strip() for g in genes.split(",") if g.strip()])

    _roundtrip(path, out, step)


@app.command()
def serve(
    host: Annotated[
        str,
        typer.Option(help="Address to bind: 127.0.0.1 is this machine only; 0.0.0.0 exposes it."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 7860,
    max_upload_mb: Annotated[float, typer.Option(help="Largest .h5ad upload (MB).")] = 200.0,
) -> None:
    """Start the local web app (Gradio; needs `pip install 'kbfm\\[web]'`). See docs/web.md."""

    def go():
        from .web import serve as serve_app

        serve_app(
            host=host,
            port=port,
            max_upload_mb=max_upload_mb,
            on_start=lambda url: typer.echo(f"kbfm web app on {url} (Ctrl-C to stop)"),
        )

    _run(go)


@knowledge_app.command("download")
def knowledge_download(
    source: Annotated[str, typer.Argument(help="Only 'ncbi' for now.")],
    species: SpeciesOpt = "human",
    dest: Annotated[Path | None, typer.Option(help="Target folder (default: kbfm cache).")] = None,
) -> None:
    """Download a gene knowledge source for offline use (needs internet)."""
    from ._errors import KbfmInputError
    from .knowledge.ncbi_download import download_ncbi

    def go():
        if source != "ncbi":
            msg = f"Unknown downloadable source {source!r}; available: ['ncbi']."
            raise KbfmInputError(msg)
        folder = download_ncbi(species=species, dest=dest)
        typer.echo(f"NCBI gene knowledge for {species} in {folder}; use source='ncbi'.")

    _run(go)


from .cli_image import embed_image_cmd, predict_expression_cmd  # noqa: E402
from .cli_qc import deconvolve_cmd, qc_cmd  # noqa: E402 - registered after `app` exists

app.command("embed-image")(embed_image_cmd)
app.command("predict-expression")(predict_expression_cmd)
app.command("qc")(qc_cmd)
app.command("deconvolve")(deconvolve_cmd)


if __name__ == "__main__":
    app()
