"""The kbfm agent with a real model (Qwen2.5-Coder-1.5B, bf16, CPU) on five questions.

Questions 1-2 are the example questions of issue 6 (``benchmarks/RESULTS.md``, "Agent
transcripts"), asked on scanpy's ``pbmc68k_reduced``; questions 3-5 need spot
coordinates and are asked on the human lymph node Visium spots of spacexr
(``../shared/data/deconv/spacexr/SpatialRNA/VisiumLymphVignette/visium_lymph.h5ad``,
1,000 spots x 2,000 genes, raw counts, ``obsm["spatial"]``).

For each question: the tools called, whether each call was valid (``step.ok``: a
registered tool, arguments matching its schema, the tool ran), the steps used, wall time,
final answer and stop reason, whether the expected tools were called, and whether the
caller's AnnData was left unchanged. Transcripts (JSON + Markdown) and any figures go to
``benchmarks/results/agent_examples/qwen1.5b_<n>_<slug>/``.

Run: HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/python benchmarks/agent_eval.py
     (``--llm qwen0.5b``, ``--only 3 4``, ``--max-steps 6``)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import resource
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import annotation_breadth as ab
from _data import DATA_ROOT

import kbfm
from kbfm.agent import run_agent
from kbfm.encoders.llm import get_llm

ROOT = Path(__file__).resolve().parents[1]
COMMAND = "HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/python"
RESULTS = ROOT / "benchmarks" / "results"
VISIUM_LYMPH = "deconv/spacexr/SpatialRNA/VisiumLymphVignette/visium_lymph.h5ad"

# (question, data, expected tools: every group must have one of its tools called)
QUESTIONS = [
    (
        "Which cell types are in this sample, and which cells look like NK cells?",
        "pbmc68k_reduced",
        [["annotate_cell_types"], ["query_cells"]],
    ),
    ("Which cell types are in this sample?", "pbmc68k_reduced", [["annotate_cell_types"]]),
    (
        "Run QC on this sample, then find 4 spatial domains.",
        "visium_lymph",
        [["run_qc"], ["find_domains"]],
    ),
    (
        "Where are the T cells in this tissue? Plot them.",
        "visium_lymph",
        [["query_cells", "annotate_cell_types", "deconvolve_spots"], ["plot_spatial"]],
    ),
    (
        "Estimate the proportions of B cells, T cells and macrophages in these spots and "
        "summarise them.",
        "visium_lymph",
        [["deconvolve_spots"]],
    ),
]


def load_data(name: str):
    if name == "pbmc68k_reduced":
        return kbfm.datasets.pbmc68k_reduced(), "scanpy package (kbfm.datasets.pbmc68k_reduced)"
    import anndata as ad

    path = DATA_ROOT / VISIUM_LYMPH
    return ad.read_h5ad(path), str(path)


def fingerprint(adata) -> str:
    """Hash of X, obs/var names and columns, obsm keys (detects any in-place change)."""
    h = hashlib.sha256()
    X = adata.X
    data = X.data if hasattr(X, "data") and not isinstance(X, np.ndarray) else np.asarray(X)
    h.update(np.ascontiguousarray(data).tobytes())
    h.update("|".join(map(str, adata.obs_names)).encode())
    h.update("|".join(map(str, adata.var_names)).encode())
    h.update(("obs:" + ",".join(adata.obs.columns)).encode())
    h.update(("var:" + ",".join(adata.var.columns)).encode())
    h.update(("obsm:" + ",".join(sorted(adata.obsm))).encode())
    h.update(("uns:" + ",".join(sorted(adata.uns))).encode())
    return h.hexdigest()[:16]


def _relative(path: str) -> str:
    p = Path(path)
    return str(p.relative_to(ROOT)) if p.is_absolute() and p.is_relative_to(ROOT) else path


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40]


def record_turns(llm) -> list[dict]:
    """Record every model turn (raw text, parsed calls, errors, seconds) on the instance.

    The instance's ``chat`` is wrapped in place, so the agent still sees the same
    backend class (and its native tool handling).
    """
    turns: list[dict] = []
    inner = llm.chat

    def chat(messages, *, tools=None, max_tokens=256):
        t = time.perf_counter()
        reply = inner(messages, tools=tools, max_tokens=max_tokens)
        turns.append(
            {
                "seconds": round(time.perf_counter() - t, 1),
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.completion_tokens,
                "content": reply.content,
                "tool_calls": [c.get("function", {}) for c in reply.tool_calls],
                "errors": list(reply.errors),
            }
        )
        return reply

    llm.chat = chat
    return turns


def evaluate(
    index: int, question: str, data: str, expected, llm, name: str, max_steps: int
) -> dict:
    adata, source = load_data(data)
    before = fingerprint(adata)
    out_dir = RESULTS / "agent_examples" / f"{name}_{index}_{slug(question)}"
    load = os.getloadavg()
    turns = record_turns(llm)
    t = time.perf_counter()
    error = None
    transcript = None
    try:
        transcript, _ = run_agent(
            question, adata=adata, llm=llm, max_steps=max_steps, out_dir=out_dir
        )
    except Exception as err:  # recorded, the next question still runs
        error = f"{type(err).__name__}: {err}"
    wall = time.perf_counter() - t
    del llm.chat  # back to the class method
    row: dict = {
        "question": question,
        "data": data,
        "data_source": source,
        "out_dir": str(out_dir.relative_to(ROOT)),
        "wall_s": round(wall, 1),
        "loadavg_start": [round(x, 2) for x in load],
        "input_unchanged": fingerprint(adata) == before,
        "error": error,
        "model_turns": turns,
    }
    if transcript is None:
        return row
    steps = [asdict(s) for s in transcript.steps]
    called = [s["tool"] for s in steps]
    valid = [s["tool"] for s in steps if s["ok"]]
    row.update(
        model=transcript.model,
        prompt=transcript.prompt,
        tools_called=called,
        calls_valid=[bool(s["ok"]) for s in steps],
        steps=[
            {
                "tool": s["tool"],
                "arguments": s["arguments"],
                "ok": s["ok"],
                "result": s["result"][:300],
            }
            for s in steps
        ],
        steps_used=len(steps),
        n_valid_calls=len(valid),
        expected_tools=expected,
        expected_tools_called=all(any(t in valid for t in group) for group in expected),
        answer=transcript.answer,
        stop_reason=transcript.stop_reason,
        tokens=transcript.tokens,
        files=[
            str(Path(f).relative_to(ROOT)) if Path(f).is_absolute() else f for f in transcript.files
        ],
    )
    return row


def to_markdown(payload: dict) -> str:
    meta = payload["meta"]
    out = [
        "# kbfm agent with a real model (issue 13, part 4)\n",
        f"Command: `{meta['command']}`\n",
        f"Model `{meta['llm']}` ({meta['model_id']}), max_steps {meta['max_steps']}, system "
        f"prompt `{meta['prompt']}`; {meta['threads']} torch thread(s); {meta['date']}; "
        f"{meta['machine']['cpus']} CPUs; load "
        f"average at start {meta['loadavg_start']}; model load {meta['load_s']} s; peak RSS "
        f"{meta['peak_rss_gb']} GB; total {meta['total_s']:.0f} s.\n",
        "| # | question | data | tools called (✓ valid, ✗ invalid) | steps | expected tools | "
        "input unchanged | wall s | stop |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in payload["questions"]:
        i = r["number"]
        if r.get("error"):
            out.append(f"| {i} | {r['question']} | {r['data']} | error: {r['error'][:100]} |||||")
            continue
        calls = ", ".join(f"{s['tool']} {'✓' if s['ok'] else '✗'}" for s in r["steps"]) or "(none)"
        out.append(
            f"| {i} | {r['question']} | {r['data']} | {calls} | {r['steps_used']} | "
            f"{'yes' if r['expected_tools_called'] else 'no'} | "
            f"{'yes' if r['input_unchanged'] else 'NO'} | {r['wall_s']} | {r['stop_reason']} |"
        )
    out.append("\n## Calls and answers\n")
    for r in payload["questions"]:
        i = r["number"]
        out.append(f"**{i}. {r['question']}** (`{r['out_dir']}`)\n")
        for s in r.get("steps", []):
            res = s["result"].replace("\n", " ")[:200]
            out.append(
                f"- `{s['tool']}({s['arguments'][:150]})` {'ok' if s['ok'] else 'FAILED'}: {res}"
            )
        answer = (r.get("answer") or "").replace("\n", " ")[:600]
        out.append(f"\nAnswer: {answer or '(none)'}\n")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--llm", default="qwen1.5b")
    parser.add_argument("--max-steps", type=int, default=6)
    parser.add_argument("--only", type=int, nargs="+", help="question numbers (1-5)")
    parser.add_argument(
        "--threads",
        default="1",
        help="torch threads for the LLM ('auto' or a count; 1 is fastest on a busy 2-core box)",
    )
    args = parser.parse_args()
    kbfm.settings.progress = False
    command = " ".join([f"{COMMAND} benchmarks/agent_eval.py", *sys.argv[1:]])
    start, load_start = time.perf_counter(), os.getloadavg()
    t = time.perf_counter()
    threads = args.threads if args.threads == "auto" else int(args.threads)
    llm = get_llm(args.llm, threads=threads)
    load_s = round(time.perf_counter() - t, 1)
    rows = []
    for i, (question, data, expected) in enumerate(QUESTIONS, start=1):
        if args.only and i not in args.only:
            continue
        print(f"{i}. {question}", flush=True)
        row = evaluate(i, question, data, expected, llm, args.llm, args.max_steps)
        row["number"] = i
        rows.append(row)
        print(
            f"   tools {row.get('tools_called')} ok {row.get('calls_valid')} "
            f"stop {row.get('stop_reason')} {row['wall_s']}s {row.get('error') or ''}",
            flush=True,
        )
    payload = {
        "benchmark": "agent_eval",
        "meta": {
            "command": command,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "llm": args.llm,
            "model_id": llm.model_id,
            "threads": getattr(llm, "threads", None),
            "load_s": load_s,
            "max_steps": args.max_steps,
            "prompt": rows[0].get("prompt") if rows else None,
            "total_s": round(time.perf_counter() - start, 1),
            "loadavg_start": [round(x, 2) for x in load_start],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "kbfm": kbfm.__version__,
        },
        "questions": rows,
    }
    # Partial runs (--only) never overwrite the committed results.
    folder = RESULTS if not args.only else Path(tempfile.gettempdir()) / "kbfm_agent_eval"
    ab.write_atomic(folder / "agent_eval.json", json.dumps(payload, indent=2))
    ab.write_atomic(folder / "agent_eval.md", to_markdown(payload))
    print(f"written to {folder}")
    print(to_markdown(payload))


if __name__ == "__main__":
    main()
