"""Atomic file writes: a temporary file in the same folder, then ``os.replace``."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path


def _target_mode(path: Path) -> int:
    """The mode a plain write would give: the old file's, else 0666 less the umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Let ``write(tmp_path)`` produce the file, then move it onto ``path`` atomically.

    Readers see the old file or the new one, never a half-written one; on error the
    temporary file is removed and ``path`` is untouched. The file gets the permissions a
    plain write would give (those of the file it replaces, else 0666 less the umask).

    Parameters
    ----------
    path
        Destination; its folder is created when missing.
    write
        Callable that writes the complete file to the temporary path it is given
        (e.g. ``lambda tmp: fig.savefig(tmp, format="png")``).

    Returns
    -------
    The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _target_mode(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        Path(tmp).chmod(mode)  # mkstemp makes 0600; give the file its usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))
