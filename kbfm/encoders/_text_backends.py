"""Text-encoder backends: sentence-transformers, HF transformers mean pooling, OpenAI HTTP.

Every backend exposes the same small surface (:class:`TextEncoder`): ``model_id``,
``revision`` (identifies the exact weights, used as cache key), ``dim`` and
``encode(texts) -> float32 array``. Heavy libraries are imported lazily.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from .._errors import KbfmInputError, KbfmUnavailableError
from .._http import check_timeout, post_json
from .._settings import settings
from ._progress import library_progress


@lru_cache(maxsize=32)
def weights_fingerprint(folder: str) -> str:
    """Return a SHA-256 over the weight and config files of a local model folder."""
    root = Path(folder)
    h = hashlib.sha256()
    patterns = (
        "*.safetensors",
        "*.bin",
        "*.gguf",
        "*.pt",
        "*.pth",
        "config.json",
        "tokenizer.json",
    )
    files = sorted({p for pat in patterns for p in root.rglob(pat) if p.is_file()})
    if not files:
        msg = f"No weight files found in model folder {root}."
        raise KbfmInputError(msg)
    for path in files:
        h.update(str(path.relative_to(root)).encode())
        with path.open("rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def _length_sorted(texts: Sequence[str]) -> np.ndarray:
    return np.argsort([-len(t) for t in texts], kind="stable")


class TextEncoder:
    """Common interface of text encoders.

    Attributes
    ----------
    name
        Registry name or the string the user passed.
    model_id
        Stable identifier of the model (hub id, path or endpoint + model).
    revision
        Identifies the exact weights (hash of local files, hub revision, or ``"remote"``).
    dim
        Output dimension.
    """

    name: str
    model_id: str
    revision: str
    dim: int

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
        normalize_embeddings: bool = True,
    ) -> np.ndarray:
        """Embed texts.

        Parameters
        ----------
        texts
            Texts to embed.
        batch_size
            Texts per forward pass / request (default ``settings.batch_size``).
        show_progress_bar
            Show a tqdm bar (default ``settings.progress`` and more than one batch).
        normalize_embeddings
            L2-normalise each vector.

        Returns
        -------
        Array of shape ``(len(texts), dim)``, float32, in input order.
        """
        from tqdm.auto import tqdm

        texts = [str(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        bs = batch_size or settings.batch_size
        order = _length_sorted(texts)
        starts = range(0, len(texts), bs)
        show = settings.progress if show_progress_bar is None else show_progress_bar
        for start in tqdm(
            starts, desc=f"encode [{self.name}]", disable=not show or len(starts) < 2
        ):
            idx = order[start : start + bs]
            batch = np.asarray(self._encode_batch([texts[i] for i in idx]))
            if batch.shape != (len(idx), self.dim):
                msg = (
                    f"Text encoder {self.name!r} returned vectors of shape {batch.shape}, "
                    f"expected ({len(idx)}, {self.dim}); an endpoint whose dimension "
                    "changes mid-run cannot be mixed with earlier embeddings."
                )
                raise KbfmUnavailableError(msg)
            out[idx] = batch
        if normalize_embeddings:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.maximum(norms, 1e-12)
        return out


class SentenceTransformerEncoder(TextEncoder):
    """Any sentence-transformers model from a local folder or a hub id."""

    def __init__(self, name: str, source: str, *, device: str | None = None, revision=None):
        from sentence_transformers import SentenceTransformer

        self.name = name
        self.model_id = str(source)
        local = Path(source).expanduser()
        try:
            with library_progress():
                self.model = SentenceTransformer(
                    str(local) if local.exists() else str(source),
                    device=device or settings.resolve_device(),
                    revision=revision,
                )
        except OSError as err:
            msg = (
                f"Could not load sentence-transformers model {source!r}: {err}. "
                "Offline, only models already on disk load (e.g. the default 'minilm')."
            )
            raise KbfmUnavailableError(msg) from err
        self.revision = (
            weights_fingerprint(str(local)) if local.exists() else str(revision or "main")
        )
        get_dim = getattr(self.model, "get_embedding_dimension", None)
        get_dim = get_dim or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(
            texts, batch_size=len(texts), show_progress_bar=False, convert_to_numpy=True
        ).astype(np.float32)


class HFMeanPoolEncoder(TextEncoder):
    """Any HF transformers model, embedding = attention-masked mean of the last hidden state.

    This is how a language model's own representation of a text is used (scELMo / GenePT
    with local LLMs).
    """

    def __init__(
        self,
        name: str,
        source: str,
        *,
        device: str | None = None,
        revision: str | None = None,
        max_length: int = 512,
        **load_kwargs,
    ):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.name = name
        self.model_id = str(source)
        self.device = device or settings.resolve_device()
        self.max_length = max_length
        try:
            with library_progress():
                self.tokenizer = AutoTokenizer.from_pretrained(
                    source, revision=revision, **load_kwargs
                )
                self.model = AutoModel.from_pretrained(source, revision=revision, **load_kwargs)
        except OSError as err:
            msg = f"Could not load transformers model {source!r}: {err}."
            raise KbfmUnavailableError(msg) from err
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.model.to(self.device).eval()
        self._torch = torch
        local = Path(str(source)).expanduser()
        self.revision = (
            weights_fingerprint(str(local)) if local.is_dir() else str(revision or "main")
        )
        self.dim = int(self.model.config.hidden_size)

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return pooled.float().cpu().numpy()


class OpenAIEmbeddingsEncoder(TextEncoder):
    """Any OpenAI-compatible ``/v1/embeddings`` endpoint (OpenAI, vLLM, Ollama, TEI...).

    The API key is read from the environment variable named by ``api_key_env`` at
    request time; it is never stored on the object, logged or written anywhere.
    """

    def __init__(
        self,
        name: str,
        model: str,
        *,
        base_url: str = "https://api.openai.com/v1",
        api_key_env: str = "OPENAI_API_KEY",
        dim: int | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        backoff: float = 1.0,
    ):
        self.name = name
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.timeout = settings.http_timeout if timeout is None else check_timeout(timeout)
        self.max_retries = settings.http_retries if max_retries is None else int(max_retries)
        self.backoff = backoff
        self.model_id = f"{self.base_url}#{model}"
        self.revision = "remote"
        self.dim = int(dim) if dim else self._probe_dim()

    @property
    def url(self) -> str:
        """The embeddings URL (``base_url`` + ``/embeddings``)."""
        return f"{self.base_url}/embeddings"

    def _probe_dim(self) -> int:
        return int(self._request(["dimension probe"]).shape[1])

    def _request(self, texts: list[str]) -> np.ndarray:
        payload = post_json(
            self.url,
            {"model": self.model, "input": texts},
            api_key_env=self.api_key_env,
            what="Embeddings endpoint",
            timeout=self.timeout,
            max_retries=self.max_retries,
            backoff=self.backoff,
        )
        try:
            rows = sorted(payload["data"], key=lambda d: d["index"])
            vectors = np.asarray([r["embedding"] for r in rows], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as err:
            msg = f"Endpoint {self.url} answered without the OpenAI embeddings schema ({err})."
            raise KbfmUnavailableError(msg) from None
        if vectors.shape[0] != len(texts):
            msg = f"Endpoint {self.url} returned {vectors.shape[0]} vectors for {len(texts)} texts."
            raise KbfmUnavailableError(msg)
        return vectors

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        return self._request(texts)
