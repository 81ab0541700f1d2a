"""SHA-256 digests used across kbfm: of bytes, of text, of files, of a tuple of strings."""

from __future__ import annotations

import hashlib
import os

_BLOCK = 8 << 20  # 8 MiB read blocks


def sha256_bytes(data: bytes) -> str:
    """Return the hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    """Return the hex SHA-256 of ``text`` encoded as UTF-8."""
    return sha256_bytes(text.encode("utf-8"))


def sha256_file(path: str | os.PathLike, *, block: int = _BLOCK) -> str:
    """Return the hex SHA-256 of a file, read in blocks (never whole)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_parts(*parts: str) -> str:
    """Return the hex SHA-256 of several strings, each length-prefixed.

    The prefix keeps ``("ab", "c")`` and ``("a", "bc")`` apart.
    """
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()
