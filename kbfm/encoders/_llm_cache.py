"""An on-disk cache of LLM answers, keyed by (model id, messages)."""

from __future__ import annotations

import json
from pathlib import Path

from .._atomic import atomic_write_text
from .._hashing import sha256_text
from .._settings import settings
from .llm import LLM


def _cache_path(model_id: str, prompt: str) -> Path:
    key = sha256_text(f"{model_id}\0{prompt}")
    return settings.cache_dir / "llm" / key[:2] / f"{key}.json"


def cached_chat(llm: LLM, messages: list[dict], *, cache: bool, max_tokens: int = 512) -> str:
    """Answer ``messages`` through an on-disk cache keyed by (model id, messages).

    Parameters
    ----------
    llm
        The model that answers on a cache miss.
    messages
        Chat messages (``role`` / ``content`` dicts).
    cache
        Read and write the cache; ``False`` always asks the model and stores nothing.
    max_tokens
        Answer length bound passed to the model.

    Returns
    -------
    The answer text. A cache entry that cannot be read is removed and the model asked.
    """
    prompt = json.dumps(messages, sort_keys=True)
    path = _cache_path(llm.model_id, prompt)
    if cache and path.exists():
        try:
            return json.loads(path.read_text())["content"]
        except (json.JSONDecodeError, KeyError, OSError):
            path.unlink(missing_ok=True)
    content = llm.chat(messages, max_tokens=max_tokens).content
    if cache:
        atomic_write_text(path, json.dumps({"model_id": llm.model_id, "content": content}))
    return content
