"""Commands on cells and spots: embed genes and cells, annotate, query, domains."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import (
    EncoderOpt,
    InPath,
    LayerOpt,
    OutOpt,
    RawOpt,
    SourceOpt,
    SpeciesOpt,
    TimeoutOpt,
    roundtrip,
    run_guarded,
    server_options,
)


def embed_genes_cmd(
    path: InPath,
    out: OutOpt = None,
    source: SourceOpt = "atlas",
    encoder: EncoderOpt = "minilm",
    species: SpeciesOpt = "auto",
) -> None:
    """Embed each gene's knowledge text into varm['kbfm_gene_text']."""
    from .. import tl

    roundtrip(
        path, out, lambda a: tl.embed_genes(a, source=source, encoder=encoder, species=species)
    )


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
    from .. import tl

    roundtrip(
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
    from .. import tl
    from ..tl.annotate import check_method_options

    # Refuse another method's options before reading the file (--base-url and --timeout
    # become llm_options).
    llm_flags = {"base_url": base_url, "timeout": timeout}
    run_guarded(
        lambda: check_method_options(
            method,
            source=source,
            encoder=encoder,
            llm=llm,
            llm_options={k: v for k, v in llm_flags.items() if v is not None} or None,
            constrained=constrained,
        )
    )

    cands = candidates.split(",") if candidates and "," in candidates else candidates
    if cands == "all":
        cands = None
    llm_kwargs = {}
    if method == "llm":
        llm_kwargs = {
            "llm": llm,
            "llm_options": run_guarded(lambda: server_options(llm, base_url, timeout)) or None,
            "constrained": constrained,
        }
    roundtrip(
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


def query(
    path: InPath,
    text: Annotated[str, typer.Argument(help="Free-text query, e.g. 'cytotoxic T cell'.")],
    out: OutOpt = None,
    key: Annotated[str | None, typer.Option(help="obs column to write.")] = None,
) -> None:
    """Score every cell against a text query (needs obsm['X_genetext'])."""
    from .. import tl

    roundtrip(path, out, lambda a: tl.query(a, text, key_added=key))


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
    from .. import tl

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

    roundtrip(path, out, step)
