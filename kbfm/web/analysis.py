"""The analyses behind the page: annotation table, text query, spatial domains."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
from anndata import AnnData

from .._errors import KbfmInputError
from .._keys import CELL_TEXT_KEY, CELLTYPE_KEY, DOMAIN_KEY, LATENT_KEY
from .data import PREFERRED_COLORS, Progress, report_progress

#: Where a Cell Ontology term is shown to the user.
OLS_URL = "https://www.ebi.ac.uk/ols4/ontologies/cl/classes?obo_id={}"


def parse_candidates(text: str) -> object:
    """The annotation candidates typed in the page, as :func:`kbfm.tl.annotate` takes them.

    Parameters
    ----------
    text
        ``"auto"`` (or empty), ``"all"``, an ontology branch such as ``"leukocyte"``,
        or comma-separated cell types.

    Returns
    -------
    ``"auto"``, ``None`` (all types), the branch name, or a list of names.

    Examples
    --------
    >>> parse_candidates("B cell, T cell")
    ['B cell', 'T cell']
    """
    text = (text or "").strip()
    if not text or text == "auto":
        return "auto"
    if text == "all":
        return None
    if "," in text:
        return [t.strip() for t in text.split(",") if t.strip()]
    return text


def annotate_clusters(
    adata: AnnData,
    *,
    candidates: str = "auto",
    tissue: str = "",
    groupby: str = "auto",
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Zero-shot annotation of clusters, summarised as one row per cluster.

    Parameters
    ----------
    adata
        Prepared data (see :func:`prepare`); receives ``obs["kbfm_celltype"]`` and the
        other keys of :func:`kbfm.tl.annotate`.
    candidates
        As typed in the page (see :func:`parse_candidates`).
    tissue
        Optional tissue name (e.g. ``"lymph node"``) to choose the candidate lineages.
    groupby
        ``"auto"`` (Leiden clusters) or an ``obs`` column.
    progress
        ``callable(fraction, description)``.

    Returns
    -------
    Columns ``cluster``, ``cells``, ``cell type``, ``CL id``, ``score``, ``link``
    (the term's page in the EBI Ontology Lookup Service), largest clusters first.
    """
    from .. import tl

    report_progress(progress, 0.1, "Annotating clusters against the Cell Ontology")
    groupby = groupby or "auto"
    tl.annotate(
        adata, candidates=parse_candidates(candidates), groupby=groupby, tissue=tissue or None
    )
    key = "kbfm_clusters" if groupby == "auto" else groupby
    obs = adata.obs
    table = (
        pd.DataFrame(
            {
                "cluster": obs[key].astype(str),
                "cell type": obs[CELLTYPE_KEY].astype(str),
                "CL id": obs["kbfm_celltype_id"].astype(str),
                "score": obs["kbfm_celltype_score"].astype(float),
            }
        )
        .groupby("cluster", sort=False)
        .agg(
            cells=("cell type", "size"),
            **{
                "cell type": ("cell type", lambda s: s.value_counts().index[0]),
                "CL id": ("CL id", lambda s: s.value_counts().index[0]),
            },
            score=("score", "mean"),
        )
        .reset_index()
        .sort_values(["cells", "cluster"], ascending=[False, True], ignore_index=True)
    )
    table["score"] = table["score"].round(3)
    table["link"] = [OLS_URL.format(cl) for cl in table["CL id"]]
    report_progress(progress, 1.0, "Annotation done")
    return table


def annotation_table_html(table: pd.DataFrame) -> str:
    """Render :func:`annotate_clusters`' table as HTML with a link to each ontology term.

    Parameters
    ----------
    table
        The table from :func:`annotate_clusters`.

    Returns
    -------
    An HTML ``<table>`` (values escaped).
    """
    head = "".join(f"<th>{h}</th>" for h in ("cluster", "cells", "cell type", "CL id", "score"))
    rows = []
    for r in table.to_dict("records"):
        term = html.escape(str(r["CL id"]))
        link = f'<a href="{html.escape(r["link"])}" target="_blank" rel="noopener">{term}</a>'
        rows.append(
            f"<tr><td>{html.escape(str(r['cluster']))}</td><td>{r['cells']}</td>"
            f"<td>{html.escape(str(r['cell type']))}</td><td>{link}</td>"
            f"<td>{r['score']:.3f}</td></tr>"
        )
    return (
        f'<table class="kbfm-table"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def query_tissue(adata: AnnData, text: str, *, progress: Progress | None = None) -> str:
    """Score every spot against a free-text query (:func:`kbfm.tl.query`).

    Parameters
    ----------
    adata
        Prepared data with ``obsm["X_genetext"]``.
    text
        The query, e.g. ``"T cells near the follicle border"``.
    progress
        ``callable(fraction, description)``.

    Returns
    -------
    The ``obs`` column written (``kbfm_query_<slug>``).
    """
    from .. import tl
    from ..tl.query import _query_key

    if not (text or "").strip():
        msg = "Type a query first, e.g. 'B cell' or 'T cells near the follicle border'."
        raise KbfmInputError(msg)
    report_progress(progress, 0.2, "Embedding the query")
    key = _query_key(text.strip())
    tl.query(adata, text.strip(), key_added=key)
    report_progress(progress, 1.0, "Query done")
    return key


def query_summary(adata: AnnData, key: str) -> str:
    """Markdown: where the query scores highest, by the best available grouping.

    Parameters
    ----------
    adata
        Data with ``obs[key]``.
    key
        The query column.

    Returns
    -------
    One or two lines of markdown.
    """
    scores = adata.obs[key].astype(float)
    line = f"Cosine similarity in `obs['{key}']`: min {scores.min():.3f}, max {scores.max():.3f}."
    group = next(
        (c for c in PREFERRED_COLORS if c in adata.obs and c not in (key, "kbfm_clusters")), None
    )
    if group is None:
        return line
    means = scores.groupby(adata.obs[group].astype(str)).mean().sort_values(ascending=False)
    top = ", ".join(f"{html.escape(k)} ({v:.3f})" for k, v in means.head(3).items())
    return f"{line}\n\nHighest mean by `{group}`: {top}."


def find_domains(
    adata: AnnData, n_domains: int, *, progress: Progress | None = None
) -> pd.DataFrame:
    """Spatial domains (:func:`kbfm.tl.domains`) with ``n_domains`` clusters.

    Uses ``obsm["X_kbfm"]`` when a FusionModel wrote one, else the knowledge embedding
    ``obsm["X_genetext"]`` (20 principal components, 3 mixture restarts, so it stays
    interactive), smoothed over spatial neighbours when the data has coordinates.

    Parameters
    ----------
    adata
        Prepared data; receives ``obs["kbfm_domain"]``.
    n_domains
        Number of domains (2 to 30).
    progress
        ``callable(fraction, description)``.

    Returns
    -------
    Columns ``domain`` and ``spots``.
    """
    from .. import tl

    k = int(n_domains)
    if not 2 <= k <= min(30, adata.n_obs - 1):
        msg = f"Number of domains must be between 2 and {min(30, adata.n_obs - 1)}, got {k}."
        raise KbfmInputError(msg)
    rep = LATENT_KEY if LATENT_KEY in adata.obsm else CELL_TEXT_KEY
    if rep not in adata.obsm:
        msg = "No embedding to cluster: load the data again so it is embedded."
        raise KbfmInputError(msg)
    report_progress(
        progress, 0.1, f"Clustering {adata.n_obs:,} observations into {k} domains ({rep})"
    )
    width = np.asarray(adata.obsm[rep]).shape[1]
    tl.domains(
        adata,
        n_domains=k,
        use_rep=rep,
        n_pcs=20 if width > 20 else None,
        n_init=3,
        smooth="spatial" in adata.obsm,
    )
    sizes = adata.obs[DOMAIN_KEY].astype(str).value_counts()
    report_progress(progress, 1.0, "Domains done")
    return pd.DataFrame({"domain": sizes.index, "spots": sizes.to_numpy()})
