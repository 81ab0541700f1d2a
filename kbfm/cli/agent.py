"""``kbfm ask``: the tool-using agent."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import (
    TimeoutOpt,
    read_plan,
    run_guarded,
    server_options,
)


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
    out_dir: Annotated[
        Path, typer.Option("--out-dir", "-d", help="Folder for the transcript and figures.")
    ] = Path("kbfm_agent"),
    timeout: TimeoutOpt = None,
) -> None:
    """Answer a question by chaining kbfm tools; writes transcript.json and transcript.md."""
    from ..agent import ScriptedPolicy, run_agent
    from ..io import read_h5ad

    def go():
        adata = read_h5ad(data) if data else None
        if plan is not None:
            policy = ScriptedPolicy(read_plan(plan))
        else:
            policy = llm
        options = server_options(llm, base_url, timeout) if plan is None else {}
        transcript, _ = run_agent(
            question,
            adata=adata,
            llm=policy,
            llm_options=options,
            max_steps=max_steps,
            out_dir=out_dir,
        )
        for step in transcript.steps:
            typer.echo(f"[{step.step}] {step.tool}({step.arguments}) -> {step.result[:160]}")
        typer.echo(f"answer: {transcript.answer or '(none)'}  [{transcript.stop_reason}]")
        typer.echo(f"transcript: {out_dir}/transcript.md")

    run_guarded(go)
