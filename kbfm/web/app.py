"""The Gradio page: tabs wired to :mod:`kbfm.web.actions`, errors shown in the page."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from .._errors import KbfmInputError, KbfmUnavailableError
from .._keys import CELLTYPE_KEY, DOMAIN_KEY
from . import actions
from .session import SessionStore, WebSession

log = logging.getLogger("kbfm")

CSS = """
.kbfm-table { border-collapse: collapse; width: 100%; font-size: 0.9em; }
.kbfm-table th, .kbfm-table td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; }
.kbfm-table th { background: #f3f0f7; }
"""
INTRO = """# kbfm: knowledge-based analysis of spatial transcriptomics
Load the demo data or your own `.h5ad`, then annotate cell types against the Cell Ontology,
search the tissue with free text, find spatial domains or ask the agent. Everything runs on
this machine; nothing is sent anywhere."""
NO_DATA = "No data loaded yet: pick the demo data or upload an `.h5ad` below."


def shown_errors(step: str) -> Callable:
    """Decorate a page handler so every failure reaches the page as a one-line message.

    kbfm's own input/availability errors keep their text; anything else is logged
    (with its traceback) on the server and reported as ``"<step> failed: <type>: <msg>"``.

    Parameters
    ----------
    step
        What the handler does, for the message (e.g. ``"Annotation"``).

    Returns
    -------
    The decorator.
    """

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except gr.Error:
                raise
            except (KbfmInputError, KbfmUnavailableError) as err:
                raise gr.Error(str(err), duration=None, print_exception=False) from None
            except Exception as err:
                log.exception("kbfm web: %s failed", step)
                msg = f"{step} failed: {type(err).__name__}: {err}. Details are in the server log."
                raise gr.Error(msg, duration=None, print_exception=False) from None

        return wrapper

    return decorate


def _require_data(session: WebSession | None) -> WebSession:
    if session is None or session.adata is None:
        msg = "Load the demo data or upload an .h5ad first (tab 'Data')."
        raise KbfmInputError(msg)
    return session


def _figure(session: WebSession, fig, name: str) -> str:
    """Save a figure into the session folder, remember it for download, return its path."""
    path = actions.save_figure(fig, session.path(f"{name}.png"))
    session.figures[path.name] = path
    return str(path)


def _views(session: WebSession, color: str | None) -> tuple[str | None, str | None]:
    """Tissue and UMAP images for ``color`` (tissue is ``None`` without coordinates)."""
    adata = session.adata
    tissue = None
    if "spatial" in adata.obsm:
        tissue = _figure(session, actions.tissue_figure(adata, color), f"tissue_{color}")
    umap = None
    if color is not None:
        umap = _figure(session, actions.umap_figure(adata, color), f"umap_{color}")
    return tissue, umap


def build_app(store: SessionStore, *, max_upload_mb: float = 200.0) -> gr.Blocks:
    """Build the page.

    Parameters
    ----------
    store
        Where sessions keep their files; each browser tab gets its own session.
    max_upload_mb
        Largest accepted upload (also enforced by the server before reading).

    Returns
    -------
    The :class:`gradio.Blocks` app (not launched).
    """

    def ensure(session: WebSession | None) -> WebSession:
        return session if session is not None else store.new()

    def loaded(session: WebSession, adata, name: str, stem: str, progress) -> tuple:
        actions.prepare(adata, progress=progress)
        session.adata, session.name, session.stem = adata, name, stem
        session.figures.clear()
        session.transcript = None
        options = actions.color_options(adata)
        color = options[0] if options else None
        tissue, umap = _views(session, color)
        return (
            session,
            actions.describe(adata, name),
            gr.update(choices=options, value=color),
            tissue,
            umap,
            gr.update(choices=["auto", *actions.group_options(adata)], value="auto"),
        )

    @shown_errors("Loading the demo data")
    def on_demo(name, session, progress=gr.Progress()):  # noqa: B008 - Gradio injects it
        session = ensure(session)
        progress(0.0, desc=f"Loading {name}")
        adata = actions.load_demo(name)
        return loaded(session, adata, name, actions.DEMO_DATASETS[name].stem, progress)

    @shown_errors("Reading the upload")
    def on_upload(file, session, progress=gr.Progress()):  # noqa: B008 - Gradio injects it
        session = ensure(session)
        if file is None:
            msg = "No file received; choose an .h5ad file to upload."
            raise KbfmInputError(msg)
        path = Path(file)
        progress(0.0, desc=f"Reading {path.name}")
        adata = actions.read_upload(path, max_mb=max_upload_mb, filename=path.name)
        stem = path.name.removesuffix(".h5ad").removesuffix(".kbfm")
        return loaded(session, adata, path.name, stem, progress)

    @shown_errors("Drawing")
    def on_color(color, session):
        session = _require_data(session)
        return _views(session, color or None)

    @shown_errors("Annotation")
    def on_annotate(candidates, tissue, groupby, session, progress=gr.Progress()):  # noqa: B008 - Gradio injects it
        session = _require_data(session)
        table = actions.annotate_clusters(
            session.adata,
            candidates=candidates,
            tissue=tissue,
            groupby=groupby or "auto",
            progress=progress,
        )
        options = actions.color_options(session.adata)
        tissue_img, umap_img = _views(session, CELLTYPE_KEY)
        n = session.adata.uns["kbfm"]["annotate"]["n_candidates"]
        note = f"{len(table)} clusters annotated from {n} candidate Cell Ontology types."
        return (
            actions.annotation_table_html(table),
            note,
            tissue_img or umap_img,
            gr.update(choices=options, value=CELLTYPE_KEY),
        )

    @shown_errors("Query")
    def on_query(text, session, progress=gr.Progress()):  # noqa: B008 - Gradio injects it
        session = _require_data(session)
        adata = session.adata
        key = actions.query_tissue(adata, text, progress=progress)
        title = f"query: {text.strip()!r}"
        if "spatial" in adata.obsm:
            fig = actions.tissue_figure(adata, key, title=title)
        else:
            fig = actions.umap_figure(adata, key, title=title)
        return _figure(session, fig, key), actions.query_summary(adata, key)

    @shown_errors("Domains")
    def on_domains(k, session, progress=gr.Progress()):  # noqa: B008 - Gradio injects it
        session = _require_data(session)
        sizes = actions.find_domains(session.adata, k, progress=progress)
        tissue_img, umap_img = _views(session, DOMAIN_KEY)
        text = ", ".join(f"domain {r.domain}: {r.spots}" for r in sizes.itertuples())
        note = f"{len(sizes)} domains in `obs['kbfm_domain']` (spots per domain: {text})."
        groupings = ["auto", *actions.group_options(session.adata)]
        return tissue_img or umap_img, note, gr.update(choices=groupings)

    @shown_errors("The agent")
    def on_ask(question, backend_label, session, progress=gr.Progress()):  # noqa: B008 - Gradio injects it
        session = _require_data(session)
        backends = actions.agent_backends()
        if backend_label not in backends:
            msg = f"Unknown agent backend {backend_label!r}; choose one of {list(backends)}."
            raise KbfmInputError(msg)
        progress(0.1, desc="The agent is working (each step is a kbfm tool call)")
        out = session.path("agent")
        transcript = actions.ask_agent(
            session.adata, question, backend=backends[backend_label], out_dir=out
        )
        session.transcript = out / "transcript.md"
        files = [str(out / "transcript.md"), *transcript.files]
        return actions.transcript_markdown(transcript, folder=out), files

    @shown_errors("Preparing the downloads")
    def on_download(session, progress=gr.Progress()):  # noqa: B008 - Gradio injects it
        session = _require_data(session)
        progress(0.2, desc="Writing the annotated .h5ad")
        h5ad = actions.export_h5ad(session.adata, session.path(f"{session.stem}.kbfm.h5ad"))
        files = [str(h5ad), *map(str, session.figures.values())]
        if session.transcript is not None and session.transcript.is_file():
            files.append(str(session.transcript))
        return files

    with gr.Blocks(title="kbfm", delete_cache=(3600, 3600)) as app:
        session = gr.State(None, delete_callback=store.close)
        gr.Markdown(INTRO)
        status = gr.Markdown(NO_DATA, elem_id="kbfm-status")
        with gr.Tabs():
            with gr.Tab("Data", id="data"):
                with gr.Row():
                    with gr.Column(scale=1):
                        demo_name = gr.Dropdown(
                            list(actions.DEMO_DATASETS),
                            value=next(iter(actions.DEMO_DATASETS)),
                            label="Demo data (offline)",
                            elem_id="demo-name",
                        )
                        demo_btn = gr.Button(
                            "Load demo data", variant="primary", elem_id="load-demo"
                        )
                        upload = gr.File(
                            label=f"...or upload an .h5ad (up to {max_upload_mb:g} MB)",
                            file_types=[".h5ad"],
                            type="filepath",
                            elem_id="upload",
                        )
                        color = gr.Dropdown(
                            [], label="Colour by (obs column)", elem_id="color", interactive=True
                        )
                    with gr.Column(scale=3), gr.Row():
                        tissue_img = gr.Image(
                            label="Tissue", type="filepath", format="png", elem_id="tissue-plot"
                        )
                        umap_img = gr.Image(
                            label="UMAP", type="filepath", format="png", elem_id="umap-plot"
                        )
            with gr.Tab("Annotate", id="annotate"):
                gr.Markdown(
                    "Zero-shot: each cluster's expression, embedded through gene knowledge, is "
                    "matched to Cell Ontology types described by their cards and markers."
                )
                with gr.Row():
                    candidates = gr.Textbox(
                        "auto",
                        label="Candidates",
                        info="auto, all, an ontology branch (e.g. leukocyte) or a "
                        "comma-separated list",
                    )
                    tissue_name = gr.Textbox("", label="Tissue (optional)", info="e.g. lymph node")
                    groupby = gr.Dropdown(
                        ["auto"], value="auto", label="Clusters", info="auto = Leiden"
                    )
                annotate_btn = gr.Button("Annotate", variant="primary", elem_id="annotate")
                annotate_note = gr.Markdown(elem_id="annotation-note")
                with gr.Row():
                    table = gr.HTML(elem_id="annotation-table")
                    annotate_img = gr.Image(
                        label="Cell types", type="filepath", format="png", elem_id="annotate-plot"
                    )
            with gr.Tab("Query", id="query"):
                with gr.Row():
                    query_text = gr.Textbox(
                        label="Free-text query",
                        placeholder="T cells near the follicle border",
                        elem_id="query-text",
                        scale=4,
                    )
                    query_btn = gr.Button("Search", variant="primary", elem_id="query", scale=1)
                query_summary = gr.Markdown(elem_id="query-summary")
                query_img = gr.Image(
                    label="Similarity", type="filepath", format="png", elem_id="query-plot"
                )
            with gr.Tab("Domains", id="domains"):
                n_domains = gr.Slider(2, 15, value=5, step=1, label="Number of domains (k)")
                domains_btn = gr.Button("Find domains", variant="primary", elem_id="domains")
                domains_note = gr.Markdown(elem_id="domains-note")
                domains_img = gr.Image(
                    label="Domains", type="filepath", format="png", elem_id="domains-plot"
                )
            with gr.Tab("Agent", id="agent"):
                backends = list(actions.agent_backends())
                with gr.Row():
                    question = gr.Textbox(
                        "Which cell types are in this sample?",
                        label="Question",
                        elem_id="question",
                        scale=3,
                    )
                    backend = gr.Dropdown(backends, value=backends[0], label="Agent", scale=2)
                ask_btn = gr.Button("Ask", variant="primary", elem_id="ask")
                transcript = gr.Markdown(elem_id="transcript")
                agent_files = gr.File(label="Transcript and figures", file_count="multiple")
            with gr.Tab("Download", id="download"):
                gr.Markdown("The data with every result so far, and the figures drawn.")
                download_btn = gr.Button("Prepare files", variant="primary", elem_id="download")
                downloads = gr.File(label="Files", file_count="multiple", elem_id="downloads")

        # One computation at a time across all tabs: the kbfm steps are CPU-bound and
        # matplotlib's pyplot is not thread-safe.
        one = {"concurrency_id": "kbfm", "concurrency_limit": 1}
        load_outputs = [session, status, color, tissue_img, umap_img, groupby]
        demo_btn.click(on_demo, [demo_name, session], load_outputs, **one)
        upload.upload(on_upload, [upload, session], load_outputs, **one)
        color.input(on_color, [color, session], [tissue_img, umap_img], **one)
        annotate_btn.click(
            on_annotate,
            [candidates, tissue_name, groupby, session],
            [table, annotate_note, annotate_img, color],
            **one,
        )
        query_btn.click(on_query, [query_text, session], [query_img, query_summary], **one)
        query_text.submit(on_query, [query_text, session], [query_img, query_summary], **one)
        domains_btn.click(
            on_domains, [n_domains, session], [domains_img, domains_note, groupby], **one
        )
        ask_btn.click(on_ask, [question, backend, session], [transcript, agent_files], **one)
        download_btn.click(on_download, [session], [downloads], **one)
    return app
