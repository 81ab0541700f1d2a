"""What the web app does, as plain functions: AnnData and figures in and out, no Gradio.

Each page action calls one of these, so they can be tested (and reused in a notebook)
without a browser. ``progress`` arguments take any ``callable(fraction, description)``,
such as ``gr.Progress()``. The functions live in :mod:`~kbfm.web.data`,
:mod:`~kbfm.web.figures`, :mod:`~kbfm.web.analysis` and :mod:`~kbfm.web.ask`.
"""

from .analysis import (
    OLS_URL,
    annotate_clusters,
    annotation_table_html,
    find_domains,
    parse_candidates,
    query_summary,
    query_tissue,
)
from .ask import agent_backends, ask_agent, scripted_plan, transcript_markdown
from .data import (
    DEMO_DATASETS,
    PREFERRED_COLORS,
    DemoDataset,
    Progress,
    color_options,
    describe,
    export_h5ad,
    group_options,
    load_demo,
    prepare,
    read_upload,
)
from .figures import save_figure, tissue_figure, umap_figure

__all__ = [
    "DEMO_DATASETS",
    "OLS_URL",
    "PREFERRED_COLORS",
    "DemoDataset",
    "Progress",
    "agent_backends",
    "annotate_clusters",
    "annotation_table_html",
    "ask_agent",
    "color_options",
    "describe",
    "export_h5ad",
    "find_domains",
    "group_options",
    "load_demo",
    "parse_candidates",
    "prepare",
    "query_summary",
    "query_tissue",
    "read_upload",
    "save_figure",
    "scripted_plan",
    "tissue_figure",
    "transcript_markdown",
    "umap_figure",
]
