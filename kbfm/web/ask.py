"""The agent tab: which policies run here, a scripted plan, and a readable transcript."""

from __future__ import annotations

import os
from pathlib import Path

from anndata import AnnData

from .._errors import KbfmInputError, KbfmUnavailableError
from .._keys import CELLTYPE_KEY


def agent_backends() -> dict[str, str]:
    """Agent policies that run here: label -> name for :func:`ask_agent`.

    ``scripted`` (a fixed plan, no language model) and ``dry-run`` (prompts only) always
    work; the offline LLMs are listed when their weights are installed.

    Returns
    -------
    Ordered mapping from a label shown in the page to a backend name.
    """
    from .._model_store import MODEL_PACKAGES, is_installed
    from ..encoders.llm import LLM_SPECS, smollm2_folder

    found = {
        "scripted plan (no language model: annotate, summarise, plot)": "scripted",
        "dry-run (records the prompt, calls nothing)": "dry-run",
    }
    try:
        smollm2_folder()
        found["smollm2 (offline, tiny: answers poorly)"] = "smollm2"
    except (KbfmUnavailableError, OSError):
        pass
    for name in LLM_SPECS:
        if name in MODEL_PACKAGES and is_installed(name):
            found[f"{name} (offline, installed)"] = name
    return found


def scripted_plan(adata: AnnData) -> list[tuple[str, dict]]:
    """The fixed plan of the ``scripted`` backend: annotate, summarise, then plot.

    Parameters
    ----------
    adata
        The data (decides between a tissue plot and a UMAP).

    Returns
    -------
    ``(tool, arguments)`` pairs for :class:`kbfm.agent.ScriptedPolicy`.
    """
    plot = (
        ("plot_spatial", {"color": CELLTYPE_KEY})
        if "spatial" in adata.obsm
        else ("plot_embedding", {"color": CELLTYPE_KEY})
    )
    return [
        ("annotate_cell_types", {}),
        ("summarize_column", {"column": CELLTYPE_KEY}),
        plot,
    ]


def ask_agent(
    adata: AnnData,
    question: str,
    *,
    backend: str,
    out_dir: str | os.PathLike,
    max_steps: int = 6,
):
    """Ask the agent a question about the data (:func:`kbfm.agent.run_agent`).

    The agent works on its own copy; ``adata`` is not changed.

    Parameters
    ----------
    adata
        The loaded data.
    question
        The question in plain language.
    backend
        ``"scripted"``, ``"dry-run"`` or an LLM name (see :func:`agent_backends`).
    out_dir
        Where the transcript and the agent's figures are written.
    max_steps
        Most tool calls.

    Returns
    -------
    The :class:`kbfm.agent.Transcript`.
    """
    from ..agent import ScriptedPolicy, run_agent

    if not (question or "").strip():
        msg = "Type a question first, e.g. 'Which cell types are in this sample?'."
        raise KbfmInputError(msg)
    policy = ScriptedPolicy(scripted_plan(adata)) if backend == "scripted" else backend
    transcript, _ = run_agent(
        question.strip(), adata=adata, llm=policy, max_steps=max_steps, out_dir=out_dir
    )
    return transcript


def transcript_markdown(transcript, *, folder: str | os.PathLike | None = None) -> str:
    """The agent's transcript, one section per step, for reading in the page.

    Parameters
    ----------
    transcript
        A :class:`kbfm.agent.Transcript`.
    folder
        The agent's output folder: shown as bare file names (the server's temporary
        paths mean nothing to the reader).

    Returns
    -------
    Markdown.
    """
    lines = [
        f"**Question:** {transcript.question}",
        "",
        f"Model `{transcript.model}` · prompt `{transcript.prompt}` · "
        f"stop: {transcript.stop_reason} · ~{transcript.tokens:,} tokens",
        "",
    ]
    if not transcript.steps:
        lines += ["*No tool was called.*", ""]
    for step in transcript.steps:
        mark = "ok" if step.ok else "failed"
        lines += [
            f"#### Step {step.step}: `{step.tool}` ({mark})",
            "",
            f"Arguments: `{step.arguments or '{}'}`",
            "",
            f"> {step.result.strip() or '(no output)'}".replace("\n", "\n> "),
            "",
        ]
    lines += [f"**Answer:** {transcript.answer or '(none)'}"]
    text = "\n".join(lines)
    return text.replace(f"{Path(folder)}{os.sep}", "") if folder is not None else text
