"""The agent loop: question -> tool calls (OpenAI tools format) -> answer, with a transcript."""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from anndata import AnnData

from .._atomic import atomic_write_text
from .._errors import KbfmInputError, KbfmUnavailableError
from ..encoders.llm import LLM, ChatResult, estimate_tokens, get_llm
from ..prompts import load_prompt
from .tools import TOOLS, AgentSession, check_arguments, tool_schema


class ScriptedPolicy(LLM):
    """Replays a fixed plan of tool calls, then answers with the last result (tests, offline)."""

    def __init__(self, plan: list[tuple[str, dict]]) -> None:
        self.name = "scripted"
        self.model_id = "scripted"
        self.plan = list(plan)
        self.step = 0

    def chat(self, messages, *, tools=None, max_tokens=256) -> ChatResult:
        """Return the next planned tool call, then a final answer once the plan is done."""
        if self.step < len(self.plan):
            name, args = self.plan[self.step]
            self.step += 1
            call = {
                "id": f"call_{self.step}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
            return ChatResult("", [call])
        last = next((m["content"] for m in reversed(messages) if m["role"] == "tool"), "")
        return ChatResult(f"Done. Last result: {last}")


@dataclass
class AgentStep:
    """One tool call as recorded in the transcript."""

    step: int
    tool: str
    arguments: str
    ok: bool
    result: str


@dataclass
class Transcript:
    """Everything the agent did: question, steps, answer and why it stopped."""

    question: str
    model: str
    prompt: str
    steps: list[AgentStep] = field(default_factory=list)
    answer: str = ""
    stop_reason: str = ""
    tokens: int = 0
    files: list[str] = field(default_factory=list)

    def to_markdown(self) -> str:
        """Human-readable transcript."""
        lines = [
            "# kbfm agent transcript\n",
            f"**Question:** {self.question}\n",
            f"Model: `{self.model}`; prompt `{self.prompt}`; stop: {self.stop_reason}; "
            f"~{self.tokens} tokens.\n",
            "| step | tool | arguments | ok | result |",
            "|---|---|---|---|---|",
        ]
        for s in self.steps:
            res = s.result.replace("|", "/").replace("\n", " ")[:200]
            ok = "yes" if s.ok else "no"
            lines.append(f"| {s.step} | {s.tool} | `{s.arguments[:120]}` | {ok} | {res} |")
        lines.append(f"\n**Answer:** {self.answer}\n")
        if self.files:
            lines.append("Files: " + ", ".join(self.files))
        return "\n".join(lines) + "\n"

    def save(self, folder: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``transcript.json`` and ``transcript.md`` atomically into ``folder``."""
        folder = Path(folder)
        json_path = atomic_write_text(
            folder / "transcript.json", json.dumps(asdict(self), indent=2)
        )
        md_path = atomic_write_text(folder / "transcript.md", self.to_markdown())
        return json_path, md_path


def _has_native_tools(model: LLM) -> bool:
    """Backends with a tools field: their plain text is an answer, never a tool call."""
    from ..encoders.llm import HFCausalLM, OpenAIChatLLM

    if isinstance(model, OpenAIChatLLM):
        return True
    return isinstance(model, HFCausalLM) and bool(getattr(model, "supports_tools", False))


def _calls_from_text(text: str) -> list[dict]:
    """Tool calls written as JSON in plain text (local models without a tools API)."""
    match = re.search(r"\{.*\}", text, flags=re.DOTALL)
    if not match:
        return []
    try:
        obj = json.loads(match.group(0))
    except json.JSONDecodeError:
        return []
    name = obj.get("tool") or obj.get("name") if isinstance(obj, dict) else None
    if not isinstance(name, str):
        return []
    args = obj.get("arguments", {})
    return [
        {
            "id": "text_call",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(args)},
        }
    ]


_ASK_FOR_ANSWER = (
    "Your last reply was empty. Answer the question now in at most three sentences, "
    "using the tool results above, or call a tool if one is still needed."
)


def _fallback_answer(transcript: Transcript) -> str:
    """What to report when the model gave no answer twice: the last tool result."""
    done = [s for s in transcript.steps if s.ok]
    if not done:
        return "(the model gave no answer and no tool succeeded)"
    last = done[-1]
    return f"(the model gave no answer; last tool result, from {last.tool}: {last.result})"


def _final_answer(model: LLM, messages: list[dict], transcript: Transcript) -> str:
    """After the step budget: one last turn without tools, asking for the answer."""
    ask = {
        "role": "user",
        "content": "The step budget is used up: no more tool calls. Answer the question "
        "now in at most three sentences, using the tool results above.",
    }
    try:
        reply = model.chat([*messages, ask], tools=None, max_tokens=160)
    except KbfmUnavailableError:
        return _fallback_answer(transcript)
    transcript.tokens += reply.prompt_tokens + reply.completion_tokens
    return reply.content.strip() or _fallback_answer(transcript)


def run_agent(
    question: str,
    *,
    adata: AnnData | None = None,
    llm: str | LLM = "smollm2",
    llm_options: dict | None = None,
    max_steps: int = 8,
    max_tokens: int = 20_000,
    out_dir: str | os.PathLike = "kbfm_agent",
) -> tuple[Transcript, AnnData | None]:
    """Answer a question by letting an LLM call registered kbfm tools.

    Parameters
    ----------
    question
        The question in plain language.
    adata
        Data to analyse; the agent works on a copy (yours is never modified).
    llm, llm_options
        The policy: an LLM name (see :func:`kbfm.encoders.llm.get_llm`), an LLM object,
        or a :class:`ScriptedPolicy` that replays a fixed plan.
    max_steps
        Most tool calls before the agent is stopped.
    max_tokens
        Token budget (reported usage, or an estimate when the backend reports none).
    out_dir
        Where figures and the transcript (JSON + markdown) are written.

    Returns
    -------
    ``(transcript, the agent's copy of the data)``.
    """
    if not question.strip():
        msg = "The question is empty."
        raise KbfmInputError(msg)
    model = get_llm(llm, **(llm_options or {}))
    session = AgentSession(adata=adata.copy() if adata is not None else None, out_dir=Path(out_dir))
    schemas = [tool_schema(f) for f in TOOLS.values()]
    by_name = {s["function"]["name"]: s for s in schemas}
    prompt = load_prompt("agent_system")
    system = prompt.render(tool_names=", ".join(TOOLS), max_steps=max_steps)
    messages: list[dict] = [
        {"role": "system", "content": system},
        {"role": "user", "content": question},
    ]
    transcript = Transcript(question=question, model=model.model_id, prompt=prompt.key)
    asked_again = False
    while True:
        if len(transcript.steps) >= max_steps:
            transcript.stop_reason = f"step budget ({max_steps}) reached"
            break
        if transcript.tokens >= max_tokens:
            transcript.stop_reason = f"token budget ({max_tokens}) reached"
            break
        try:
            reply = model.chat(messages, tools=schemas, max_tokens=256)
        except KbfmUnavailableError as err:
            transcript.stop_reason = f"model unavailable: {err}"
            break
        used = reply.prompt_tokens + reply.completion_tokens
        transcript.tokens += used or sum(
            estimate_tokens(str(m.get("content", ""))) for m in messages
        )
        calls = reply.tool_calls
        if not calls and not _has_native_tools(model):
            calls = _calls_from_text(reply.content)
        if not calls and reply.errors:
            # A broken tool call (bad JSON inside <tool_call>): record it, tell the model.
            for error in reply.errors:
                transcript.steps.append(
                    AgentStep(len(transcript.steps) + 1, "(unparsed call)", "", False, error)
                )
            messages.append({"role": "assistant", "content": reply.content or ""})
            messages.append(
                {
                    "role": "user",
                    "content": "Your tool call could not be parsed: "
                    + "; ".join(reply.errors)
                    + ". Call a tool with valid JSON arguments, or answer.",
                }
            )
            continue
        if not calls and not reply.content.strip() and not asked_again:
            # An empty final answer (small models often stop after the last tool
            # result): ask once for the answer in words.
            asked_again = True
            messages.append({"role": "assistant", "content": ""})
            messages.append({"role": "user", "content": _ASK_FOR_ANSWER})
            continue
        if not calls:
            transcript.answer = reply.content.strip() or _fallback_answer(transcript)
            transcript.stop_reason = "answered" if reply.content.strip() else "empty answer"
            break
        messages.append({"role": "assistant", "content": reply.content or "", "tool_calls": calls})
        for call in calls:
            if len(transcript.steps) >= max_steps:
                break
            fn = call.get("function", {}) if isinstance(call, dict) else {}
            name, raw_args = str(fn.get("name", "")), fn.get("arguments", "{}")
            ok, result = False, ""
            try:
                if name not in TOOLS:
                    msg = f"unknown tool {name!r}; available: {sorted(TOOLS)}"
                    raise KbfmInputError(msg)
                try:
                    args = json.loads(raw_args) if isinstance(raw_args, str) else raw_args
                except json.JSONDecodeError as err:
                    msg = f"arguments are not valid JSON ({err.msg})"
                    raise KbfmInputError(msg) from None
                check_arguments(by_name[name], args)
                result, ok = TOOLS[name](session, **args), True
            except (KbfmInputError, KbfmUnavailableError, ValueError, KeyError) as err:
                result = f"error: {err}"
            transcript.steps.append(
                AgentStep(len(transcript.steps) + 1, name, str(raw_args), ok, result)
            )
            messages.append({"role": "tool", "tool_call_id": call.get("id", ""), "content": result})
    if not transcript.answer and transcript.stop_reason.startswith("step budget"):
        transcript.answer = _final_answer(model, messages, transcript)
    transcript.files = list(session.files)
    transcript.save(out_dir)
    return transcript, session.adata
