"""Content-addressed, atomic on-disk cache for embeddings.

An entry is keyed by ``(model id, model revision, text)``: the file name is the SHA-256
of the three, so changing the model or its weights never returns a stale vector. Each
entry is one small file holding a header, a SHA-256 of the payload and the float32
vector. Writes go to a temporary file in the same folder and are moved into place with
:func:`os.replace`, which is atomic on POSIX and Windows, so two processes writing the
same entry at once both leave a complete file. A truncated or bit-flipped entry fails its
checksum, is deleted and reported as a miss, so it is recomputed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._atomic import atomic_write_bytes, remove_stale_temp_files_under
from ._hashing import sha256_parts, sha256_text
from ._settings import settings

logger = logging.getLogger(__name__)

_MAGIC = b"KBFMEMB1"
_HEADER = struct.Struct("<8sI32s")  # magic, dimension, sha256(payload)


@dataclass
class CacheStats:
    """Counters of one cache object: lookups that hit, missed, and entries written."""

    hits: int = 0
    misses: int = 0
    writes: int = 0
    corrupt: int = 0


def text_key(model_id: str, revision: str, text: str) -> str:
    """Return the hex SHA-256 key of one (model, revision, text) triple."""
    return sha256_parts(model_id, revision, text)


def _slug(model_id: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_id)
    return safe[-60:] + "-" + sha256_text(model_id)[:8]


class EmbeddingCache:
    """Embedding cache in a folder (default ``settings.cache_dir / "embeddings"``).

    Parameters
    ----------
    root
        Cache folder; created on first write.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> cache = EmbeddingCache(tempfile.mkdtemp())
    >>> cache.put("m", "r", ["a"], np.ones((1, 3), dtype=np.float32))
    >>> cache.get("m", "r", ["a", "b"])[1]
    [1]
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else settings.cache_dir / "embeddings"
        self.stats = CacheStats()
        self.read_only = False

    def _give_up_writing(self, err: OSError) -> None:
        if not self.read_only:
            logger.warning(
                "The embedding cache %s cannot be written (%s); results are kept but not "
                "cached. Point KBFM_CACHE_DIR at a writable folder to cache them.",
                self.root,
                err.strerror or err,
            )
        self.read_only = True

    def check_writable(self) -> bool:
        """Try to write in the cache folder before heavy work; warn once when it fails.

        Returns
        -------
        True when entries can be written. Otherwise the cache is switched to read-only:
        lookups still work, :meth:`put` does nothing, and the caller keeps its results.
        """
        if self.read_only:
            return False
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.root, prefix=".probe-")
            os.close(fd)
            Path(probe).unlink()
            remove_stale_temp_files_under(self.root)
        except OSError as err:
            self._give_up_writing(err)
            return False
        return True

    def _path(self, model_id: str, revision: str, text: str) -> Path:
        key = text_key(model_id, revision, text)
        return self.root / _slug(model_id) / key[:2] / f"{key}.emb"

    def _read(self, path: Path) -> np.ndarray | None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError:
            return None
        ok = len(raw) >= _HEADER.size
        if ok:
            magic, dim, digest = _HEADER.unpack_from(raw)
            payload = raw[_HEADER.size :]
            ok = (
                magic == _MAGIC
                and len(payload) == 4 * dim
                and hashlib.sha256(payload).digest() == digest
            )
        if not ok:
            self.stats.corrupt += 1
            path.unlink(missing_ok=True)
            return None
        return np.frombuffer(payload, dtype="<f4").copy()

    def get(
        self, model_id: str, revision: str, texts: Sequence[str]
    ) -> tuple[dict[int, np.ndarray], list[int]]:
        """Look up texts.

        Parameters
        ----------
        model_id, revision
            Identify the model and its exact weights.
        texts
            Texts to look up.

        Returns
        -------
        ``(found, missing)``: a dict from position in ``texts`` to its vector, and the
        positions that must be computed.
        """
        found: dict[int, np.ndarray] = {}
        missing: list[int] = []
        for i, text in enumerate(texts):
            vec = self._read(self._path(model_id, revision, text))
            if vec is None:
                missing.append(i)
            else:
                found[i] = vec
        self.stats.hits += len(found)
        self.stats.misses += len(missing)
        return found, missing

    def put(self, model_id: str, revision: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store one vector per text, atomically.

        Parameters
        ----------
        model_id, revision
            Identify the model and its exact weights.
        texts
            Texts, aligned with the rows of ``vectors``.
        vectors
            Array of shape ``(len(texts), dim)``.

        A folder that cannot be written (read-only, disk full) switches the cache to
        read-only with one warning; nothing is raised, so computed results are kept.
        """
        vectors = np.asarray(vectors, dtype="<f4")
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            msg = f"Expected {len(texts)} vectors, got array of shape {vectors.shape}."
            raise ValueError(msg)
        for text, vec in zip(texts, vectors, strict=True):
            if self.read_only:
                return
            try:
                self._write_entry(self._path(model_id, revision, text), vec)
            except OSError as err:  # read-only or full disk: keep going without the cache
                self._give_up_writing(err)
                return
            self.stats.writes += 1

    @staticmethod
    def _write_entry(path: Path, vec: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = np.ascontiguousarray(vec).tobytes()
        blob = _HEADER.pack(_MAGIC, vec.shape[0], hashlib.sha256(payload).digest()) + payload
        atomic_write_bytes(path, blob, sweep=False)  # swept once per cache in check_writable
