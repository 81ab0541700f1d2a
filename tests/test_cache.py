"""The embedding cache: content addressing, atomic writes, corruption, two writers."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys

import numpy as np
import pytest

from kbfm._cache import EmbeddingCache
from kbfm.encoders import TextEncoder, encode_texts


class CountingEncoder(TextEncoder):
    """A deterministic encoder that counts how many texts it embedded."""

    def __init__(self, revision: str = "r1"):
        self.name = "counting"
        self.model_id = "test/counting"
        self.revision = revision
        self.dim = 8
        self.calls = 0

    def _encode_batch(self, texts):
        self.calls += len(texts)
        return (
            np.stack(
                [np.frombuffer(t.ljust(32)[:32].encode(), dtype=np.uint8)[:8] for t in texts]
            ).astype(np.float32)
            + 1
        )


def test_second_run_recomputes_nothing(tmp_path):
    cache = EmbeddingCache(tmp_path)
    enc = CountingEncoder()
    first = encode_texts(["alpha", "beta", "alpha"], enc, cache=cache)
    assert enc.calls == 2  # duplicates computed once
    second = encode_texts(["beta", "alpha"], enc, cache=cache)
    assert enc.calls == 2
    assert cache.stats.hits == 2
    np.testing.assert_array_equal(second, first[[1, 0]])


def test_key_includes_model_revision(tmp_path):
    cache = EmbeddingCache(tmp_path)
    encode_texts(["alpha"], CountingEncoder("r1"), cache=cache)
    other = CountingEncoder("r2")
    encode_texts(["alpha"], other, cache=cache)
    assert other.calls == 1


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_corrupt_entry_is_detected_and_recomputed(tmp_path, damage):
    cache = EmbeddingCache(tmp_path)
    enc = CountingEncoder()
    good = encode_texts(["gamma"], enc, cache=cache)
    (entry,) = list(tmp_path.rglob("*.emb"))
    raw = entry.read_bytes()
    if damage == "truncate":
        entry.write_bytes(raw[:-5])
    elif damage == "flip":
        entry.write_bytes(raw[:-1] + bytes([raw[-1] ^ 0xFF]))
    else:
        entry.write_bytes(b"not an embedding")
    again = encode_texts(["gamma"], enc, cache=cache)
    assert enc.calls == 2
    assert cache.stats.corrupt == 1
    np.testing.assert_array_equal(again, good)
    assert EmbeddingCache(tmp_path).get("test/counting", "r1", ["gamma"])[1] == []


def _writer(root, seed, n):
    cache = EmbeddingCache(root)
    rng = np.random.default_rng(seed)
    texts = [f"text {i}" for i in range(n)]
    vectors = np.tile(np.arange(16, dtype=np.float32), (n, 1))  # same content from both writers
    for _ in range(3):
        order = rng.permutation(n)
        cache.put("m", "r", [texts[i] for i in order], vectors[order])


def test_two_processes_writing_at_once_leave_valid_entries(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), s, 200)) for s in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cache = EmbeddingCache(tmp_path)
    found, missing = cache.get("m", "r", [f"text {i}" for i in range(200)])
    assert missing == [] and cache.stats.corrupt == 0
    assert all(np.array_equal(v, np.arange(16, dtype=np.float32)) for v in found.values())
    assert not list(tmp_path.rglob("*kbfm-tmp*"))


class NaNEncoder(CountingEncoder):
    """Returns NaN for texts containing 'bad' (as a broken endpoint might)."""

    def _encode_batch(self, texts):
        out = super()._encode_batch(texts)
        out[[i for i, t in enumerate(texts) if "bad" in t]] = np.nan
        return out


def test_nan_vectors_are_refused_and_never_cached(tmp_path):
    from kbfm._errors import KbfmUnavailableError

    cache = EmbeddingCache(tmp_path)
    with pytest.raises(KbfmUnavailableError, match="NaN or infinite"):
        encode_texts(["good", "bad one"], NaNEncoder(), cache=cache)
    assert list(tmp_path.rglob("*.emb")) == []
    ok = encode_texts(["good"], CountingEncoder(), cache=cache)  # a healthy run works after
    assert np.isfinite(ok).all()


def test_dimension_change_mid_run_is_a_clear_error(tmp_path):
    from kbfm._errors import KbfmUnavailableError

    enc = CountingEncoder()
    enc.dim = 16  # the endpoint now claims 16-d but returns 8-d vectors
    with pytest.raises(KbfmUnavailableError, match=r"expected \(1, 16\)"):
        encode_texts(["alpha"], enc, cache=EmbeddingCache(tmp_path))


def test_atomic_writes_respect_the_umask_and_an_existing_mode(tmp_path):
    import os
    import stat

    from kbfm._atomic import atomic_write_text

    old = os.umask(0o022)
    try:
        new = atomic_write_text(tmp_path / "new.txt", "x")
        assert stat.S_IMODE(new.stat().st_mode) == 0o644  # not mkstemp's 0600
        kept = tmp_path / "kept.txt"
        kept.write_text("old")
        kept.chmod(0o640)
        atomic_write_text(kept, "new")
        assert stat.S_IMODE(kept.stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_unwritable_cache_keeps_the_result_and_warns_before_encoding(tmp_path, caplog):
    # A regular file where the cache folder should be: mkdir fails even for root
    # (chmod-based read-only folders do not stop root, who runs CI here).
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    cache = EmbeddingCache(blocker / "cache")
    enc = CountingEncoder()
    order = []
    original = enc._encode_batch
    enc._encode_batch = lambda texts: order.append("encode") or original(texts)
    caplog.set_level("WARNING", logger="kbfm._cache")
    caplog.handler.emit = (lambda emit: lambda rec: order.append("warn") or emit(rec))(
        caplog.handler.emit
    )

    vectors = encode_texts(["alpha", "beta"], enc, cache=cache)

    assert vectors.shape == (2, 8) and np.isfinite(vectors).all()
    assert order[0] == "warn" and "encode" in order  # warned up front, then computed
    assert "cannot be written" in caplog.text and "KBFM_CACHE_DIR" in caplog.text
    assert cache.read_only and cache.stats.writes == 0
    uncached = encode_texts(["alpha", "beta"], CountingEncoder(), cache=False)
    np.testing.assert_array_equal(vectors, uncached)


def test_disk_full_mid_write_switches_to_read_only_once(tmp_path, monkeypatch, caplog):
    import errno

    cache = EmbeddingCache(tmp_path)
    calls = []

    def full(path, vec):
        calls.append(path)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(EmbeddingCache, "_write_entry", staticmethod(full))
    cache.put("m", "r", ["a", "b", "c"], np.ones((3, 4), dtype=np.float32))
    cache.put("m", "r", ["d"], np.ones((1, 4), dtype=np.float32))
    assert len(calls) == 1 and cache.read_only  # gave up after the first failure
    assert caplog.text.count("cannot be written") == 1 and "No space left" in caplog.text
    assert list(tmp_path.rglob("*.emb")) == []  # nothing half-written


def test_temp_files_of_a_killed_writer_are_swept_once_per_cache(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(dead.stdout)
    shard = tmp_path / "m-slug" / "ab"
    shard.mkdir(parents=True)
    left = shard / f".abc.emb.{pid}.x1y2.kbfm-tmp.emb"
    mine = shard / f".abd.emb.{os.getpid()}.x1y3.kbfm-tmp.emb"
    left.write_bytes(b"half")
    mine.write_bytes(b"in progress")
    cache = EmbeddingCache(tmp_path)
    assert cache.check_writable()
    assert not left.exists() and mine.exists()  # a live writer's file is kept
    cache.put("m", "r", ["a"], np.ones((1, 4), dtype=np.float32))
    assert cache.get("m", "r", ["a"])[1] == []
