"""Tools the agent may call: registered kbfm functions with JSON schemas from their signatures.

Only functions registered here can run; the model's text is parsed as data (tool name +
JSON arguments), never evaluated. Every tool works on the session's own copy of the
data, so the user's AnnData is never modified in place.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from anndata import AnnData

from .._errors import KbfmInputError
from .._keys import CELL_TEXT_KEY, CELLTYPE_KEY, DOMAIN_KEY, HAS_KNOWLEDGE_KEY


@dataclass
class AgentSession:
    """The state tools act on: a private copy of the data and an output folder."""

    adata: AnnData | None = None
    out_dir: Path = field(default_factory=lambda: Path("kbfm_agent"))
    files: list[str] = field(default_factory=list)

    def require_data(self) -> AnnData:
        """Return the loaded data or explain how to load it."""
        if self.adata is None:
            msg = "No data loaded: call load_data(path) first."
            raise KbfmInputError(msg)
        return self.adata


_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _param_docs(func: Callable) -> dict[str, str]:
    doc = inspect.getdoc(func) or ""
    block = (
        doc.split("Parameters\n----------\n", 1)[-1].split("\n\n", 1)[0]
        if "Parameters" in doc
        else ""
    )
    out, current = {}, None
    for line in block.splitlines():
        if line and not line.startswith(" "):
            current = line.split(":")[0].strip()
            out[current] = ""
        elif current:
            out[current] = (out[current] + " " + line.strip()).strip()
    return out


def _json_type(annotation) -> dict:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return {"type": "string", "enum": [str(a) for a in typing.get_args(annotation)]}
    if origin in (list, tuple):
        (item,) = typing.get_args(annotation)[:1] or (str,)
        return {"type": "array", "items": _json_type(item)}
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _json_type(args[0]) if args else {"type": "string"}
    return {"type": _JSON_TYPES.get(annotation, "string")}


def tool_schema(func: Callable) -> dict:
    """OpenAI ``tools`` entry for ``func`` (session parameter excluded)."""
    hints = typing.get_type_hints(func)
    docs = _param_docs(func)
    props, required = {}, []
    for name, param in inspect.signature(func).parameters.items():
        if name == "session":
            continue
        spec = _json_type(hints.get(name, str))
        if docs.get(name):
            spec["description"] = docs[name]
        props[name] = spec
        if param.default is inspect.Parameter.empty:
            required.append(name)
    summary = (inspect.getdoc(func) or func.__name__).splitlines()[0]
    return {
        "type": "function",
        "function": {
            "name": func.__name__,
            "description": summary,
            "parameters": {"type": "object", "properties": props, "required": required},
        },
    }


def check_arguments(schema: dict, arguments: object) -> dict:
    """Validate JSON arguments against a tool schema; raise KbfmInputError naming the problem."""
    params = schema["function"]["parameters"]
    if not isinstance(arguments, dict):
        msg = f"arguments must be a JSON object, got {type(arguments).__name__}."
        raise KbfmInputError(msg)
    unknown = sorted(set(arguments) - set(params["properties"]))
    missing = sorted(set(params["required"]) - set(arguments))
    if unknown or missing:
        msg = f"unknown arguments {unknown}, missing arguments {missing}."
        raise KbfmInputError(msg)
    checks = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "array": list}
    for name, value in arguments.items():
        spec = params["properties"][name]
        expected = checks[spec["type"]]
        ok = isinstance(value, expected) and not (
            spec["type"] in ("integer", "number") and isinstance(value, bool)
        )
        if not ok:
            msg = f"argument {name!r} must be {spec['type']}, got {type(value).__name__}."
            raise KbfmInputError(msg)
        if "enum" in spec and value not in spec["enum"]:
            msg = f"argument {name!r} must be one of {spec['enum']}, got {value!r}."
            raise KbfmInputError(msg)
    return arguments


# --- the registered tools ------------------------------------------------------------


def load_data(session: AgentSession, path: str) -> str:
    """Load an .h5ad file as the data to analyse (a private copy).

    Parameters
    ----------
    path
        Path of the .h5ad file.
    """
    from ..io import read_h5ad

    session.adata = read_h5ad(path)
    a = session.adata
    return (
        f"loaded {a.n_obs} observations x {a.n_vars} genes; obs columns: {list(a.obs.columns)[:12]}"
    )


def run_qc(session: AgentSession) -> str:
    """Flag low-quality cells/spots with data-driven thresholds (nothing is removed)."""
    from .. import pp

    adata = session.require_data()
    pp.auto_qc(adata)
    n_fail = int((~adata.obs["kbfm_qc_pass"].astype(bool)).sum())
    reasons = adata.obs.loc[~adata.obs["kbfm_qc_pass"].astype(bool), "kbfm_qc_reason"]
    top = reasons.astype(str).value_counts().head(3).to_dict()
    return (
        f"QC done; {n_fail} of {adata.n_obs} observations fail QC "
        f"({adata.n_obs - n_fail} pass; reasons: {top or 'none'}; see obs['kbfm_qc_*'])."
    )


def embed(
    session: AgentSession, weighting: typing.Literal["expression", "relative"] = "relative"
) -> str:
    """Embed genes and cells in the gene-knowledge text space (obsm['X_genetext']).

    Parameters
    ----------
    weighting
        'relative' (expression relative to other cells) or 'expression'.
    """
    from .. import tl

    adata = session.require_data()
    tl.embed_genes(adata)
    tl.embed_cells(adata, weighting=weighting)
    n = int(adata.var[HAS_KNOWLEDGE_KEY].sum())
    return f"embedded {adata.n_obs} observations using {n} genes with knowledge."


def annotate_cell_types(
    session: AgentSession,
    candidates: str = "auto",
    tissue: str = "",
    method: typing.Literal["zero_shot", "marker_score"] = "zero_shot",
) -> str:
    """Annotate clusters with Cell Ontology cell types (obs['kbfm_celltype']).

    Parameters
    ----------
    candidates
        'auto' (lineages chosen from the tissue or the data), or a Cell Ontology term
        whose descendants are the candidates, e.g. 'leukocyte' or 'neuron'.
    tissue
        Tissue of the sample, e.g. 'brain' or 'blood' (optional).
    method
        'zero_shot' (knowledge embeddings) or 'marker_score' (scanpy score_genes).
    """
    from .. import tl

    adata = session.require_data()
    tl.annotate(adata, method=method, candidates=candidates, groupby="auto", tissue=tissue or None)
    counts = adata.obs[CELLTYPE_KEY].value_counts().head(8)
    return "cell types: " + ", ".join(f"{k} ({v})" for k, v in counts.items())


def query_cells(session: AgentSession, text: str) -> str:
    """Score every observation against a free-text description and report the best matches.

    Parameters
    ----------
    text
        Free-text description, e.g. 'cytotoxic lymphocytes'.
    """
    from .. import tl

    adata = session.require_data()
    if CELL_TEXT_KEY not in adata.obsm:
        embed(session)
    tl.query(adata, text, key_added="kbfm_agent_query")
    top = adata.obs.sort_values("kbfm_agent_query", ascending=False).head(20)
    if CELLTYPE_KEY in adata.obs:
        mix = top[CELLTYPE_KEY].value_counts().head(3).to_dict()
        return f"top-20 matches for {text!r} are mostly: {mix}"
    best = top["kbfm_agent_query"].iloc[0]
    return f"scores for {text!r} in obs['kbfm_agent_query'] (max {best:.3f})"


def summarize_column(session: AgentSession, column: str) -> str:
    """Report the most frequent values of an obs column.

    Parameters
    ----------
    column
        Name of an obs column.
    """
    adata = session.require_data()
    if column not in adata.obs:
        msg = f"no obs column {column!r}; available: {list(adata.obs.columns)}"
        raise KbfmInputError(msg)
    counts = adata.obs[column].astype(str).value_counts().head(10)
    return ", ".join(f"{k}: {v}" for k, v in counts.items())


def plot_embedding(session: AgentSession, color: str) -> str:
    """Draw a UMAP of the knowledge embedding coloured by an obs column; returns the file.

    Parameters
    ----------
    color
        Name of an obs column.
    """
    import scanpy as sc

    from ..pl import embedding_panels

    adata = session.require_data()
    if CELL_TEXT_KEY not in adata.obsm:
        embed(session)
    if "X_umap_genetext" not in adata.obsm:
        tmp = AnnData(obs=adata.obs[[]].copy(), obsm={CELL_TEXT_KEY: adata.obsm[CELL_TEXT_KEY]})
        sc.pp.neighbors(tmp, use_rep=CELL_TEXT_KEY, random_state=0)
        sc.tl.umap(tmp, random_state=0)
        adata.obsm["X_umap_genetext"] = tmp.obsm["X_umap"]
    safe = re.sub(r"[^A-Za-z0-9_]+", "_", color)[:40]
    path = session.out_dir / f"umap_{safe}.png"
    embedding_panels(adata, basis="X_umap_genetext", color=[color], path=path)
    session.files.append(str(path))
    return f"figure written to {path}"


def find_domains(session: AgentSession, n_domains: int = 7) -> str:
    """Find spatial domains (obs['kbfm_domain']) from expression smoothed over neighbours.

    Parameters
    ----------
    n_domains
        Number of domains, e.g. the number of tissue layers.
    """
    from .. import tl

    adata = session.require_data()
    if "spatial" not in adata.obsm:
        msg = "domains need spot coordinates in obsm['spatial']; this data has none."
        raise KbfmInputError(msg)
    if not 2 <= int(n_domains) <= 50:
        msg = f"n_domains must be between 2 and 50, got {n_domains}."
        raise KbfmInputError(msg)
    if CELL_TEXT_KEY not in adata.obsm:
        embed(session)
    tl.domains(adata, n_domains=int(n_domains), use_rep=CELL_TEXT_KEY, smooth=True)
    sizes = adata.obs[DOMAIN_KEY].astype(str).value_counts().to_dict()
    return f"{len(sizes)} domains in obs['kbfm_domain']; spots per domain: {sizes}"


def plot_spatial(session: AgentSession, color: str) -> str:
    """Draw the spots in tissue coordinates coloured by an obs column; returns the file.

    Parameters
    ----------
    color
        Name of an obs column (e.g. 'kbfm_domain', 'kbfm_agent_query', 'kbfm_celltype').
    """
    from ..pl import spatial_scatter

    adata = session.require_data()
    if "spatial" not in adata.obsm:
        msg = "no spot coordinates in obsm['spatial']; use plot_embedding instead."
        raise KbfmInputError(msg)
    if color not in adata.obs:
        msg = f"no obs column {color!r}; available: {list(adata.obs.columns)[:20]}"
        raise KbfmInputError(msg)
    safe = re.sub(r"[^A-Za-z0-9_]+", "_", color)[:40]
    path = session.out_dir / f"spatial_{safe}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    ax = spatial_scatter(adata, color, image=False, save=path)
    import matplotlib.pyplot as plt

    plt.close(getattr(ax, "figure", None))
    session.files.append(str(path))
    return f"figure written to {path}"


def deconvolve_spots(session: AgentSession, cell_types: str) -> str:
    """Estimate cell-type proportions per spot without a reference (marker knowledge).

    Parameters
    ----------
    cell_types
        Comma-separated Cell Ontology cell types, e.g. 'B cell, T cell, macrophage'.
    """
    from .. import tl

    adata = session.require_data()
    types = [t.strip() for t in str(cell_types).split(",") if t.strip()]
    if len(types) < 2:
        msg = "give at least two cell types, comma-separated."
        raise KbfmInputError(msg)
    tl.deconvolve(adata, method="knowledge", cell_types=types)
    mean = adata.obsm["kbfm_proportions"].mean(axis=0).sort_values(ascending=False)
    return "mean proportions: " + ", ".join(f"{k} {v:.2f}" for k, v in mean.items())


TOOLS: dict[str, Callable[..., str]] = {
    f.__name__: f
    for f in (
        load_data,
        run_qc,
        embed,
        annotate_cell_types,
        query_cells,
        summarize_column,
        plot_embedding,
        find_domains,
        plot_spatial,
        deconvolve_spots,
    )
}
