"""Atomic file writes: a temporary file in the same folder, then ``os.replace``.

The temporary file is named ``.<name>.<pid>.<random>.kbfm-tmp<suffix>``. It is removed
on any error, on Ctrl-C (which some writers, h5py among them, would otherwise swallow)
and, when a process was killed outright, by the next write into the same folder.
"""

from __future__ import annotations

import contextlib
import glob
import os
import signal
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

_TMP_MARK = ".kbfm-tmp"


def _target_mode(path: Path) -> int:
    """The mode a plain write would give: the old file's, else 0666 less the umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temp_files(path: Path) -> list[Path]:
    """Remove temporary files of earlier writes to ``path`` whose process is gone."""
    pattern = f".{glob.escape(path.name)}.*{_TMP_MARK}{glob.escape(path.suffix)}"
    removed = []
    for tmp in path.parent.glob(pattern):
        pid = tmp.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed.append(tmp)
    return removed


@contextlib.contextmanager
def _notice_sigint() -> Iterator[list[int]]:
    """Record Ctrl-C during the block, even when the code inside swallows the exception."""
    hits: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield hits
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        hits.append(signum)
        if callable(previous):
            previous(signum, frame)

    previous_hook = sys.unraisablehook

    def quiet_hook(unraisable):
        # A Ctrl-C that lands inside a finaliser or weakref callback cannot propagate;
        # Python would print it as "Exception ignored ... Traceback". It is recorded
        # in ``hits`` and re-raised once the writer returns, so stay quiet about it.
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            return
        previous_hook(unraisable)

    signal.signal(signal.SIGINT, handler)
    sys.unraisablehook = quiet_hook
    try:
        yield hits
    finally:
        signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = previous_hook


def remove_stale_temp_files_under(root: str | os.PathLike) -> int:
    """Remove temporary files left under ``root`` by writes whose process is gone.

    Returns
    -------
    How many files were removed.
    """
    removed = 0
    for tmp in Path(root).rglob(f".*{_TMP_MARK}*"):
        parts = tmp.name.split(".")  # ".<name>.<pid>.<random>.kbfm-tmp<suffix>"
        at = parts.index(_TMP_MARK.lstrip(".")) if _TMP_MARK.lstrip(".") in parts else -1
        pid = parts[at - 2] if at >= 2 else ""
        if pid and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed += 1
    return removed


def atomic_write(
    path: str | os.PathLike, write: Callable[[str], object], *, sweep: bool = True
) -> Path:
    """Let ``write(tmp_path)`` produce the file, then move it onto ``path`` atomically.

    Readers see the old file or the new one, never a half-written one; on error or
    Ctrl-C (re-raised as ``KeyboardInterrupt`` after the writer returns, if it
    swallowed it) the temporary file is removed and ``path`` is untouched. The file
    gets the permissions a plain write would give (those of the file it replaces, else
    0666 less the umask).

    Parameters
    ----------
    path
        Destination; its folder is created when missing.
    write
        Callable that writes the complete file to the temporary path it is given
        (e.g. ``lambda tmp: fig.savefig(tmp, format="png")``).
    sweep
        First remove temporary files of earlier writes to ``path`` whose process is
        gone. Writers of many small files (the embedding cache) pass ``False`` and sweep
        their folder once with :func:`remove_stale_temp_files_under`.

    Returns
    -------
    The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if sweep:
        remove_stale_temp_files(path)
    mode = _target_mode(path)
    tmp = _temp_path(path)
    try:
        _write_complete(path, tmp, write, mode, "it was not replaced")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _temp_path(path: Path) -> str:
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=_TMP_MARK + path.suffix
    )
    os.close(fd)
    return tmp


def _write_complete(
    path: Path, tmp: str, write: Callable[[str], object], mode: int, consequence: str
) -> None:
    """Run ``write(tmp)``; raise ``KeyboardInterrupt`` if Ctrl-C came, even if swallowed."""
    with _notice_sigint() as interrupted:
        write(tmp)
    if interrupted:
        msg = f"Interrupted while writing {path}; {consequence}."
        raise KeyboardInterrupt(msg)
    Path(tmp).chmod(mode)  # mkstemp makes 0600; give the file its usual permissions


@contextlib.contextmanager
def _hold_sigint() -> Iterator[list[int]]:
    """Hold Ctrl-C back during the block (recorded, not raised); the caller re-raises."""
    hits: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield hits
        return
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, lambda signum, _frame: hits.append(signum))
    try:
        yield hits
    finally:
        signal.signal(signal.SIGINT, previous)


def atomic_write_files(writers: Mapping[str | os.PathLike, Callable[[str], object]]) -> list[Path]:
    """Write files that belong together (a model's weights and config): all or none.

    Every writer first writes its complete file to a temporary path (as in
    :func:`atomic_write`); only when all are written are they moved into place, one
    after the other, with Ctrl-C held back until the last one is in place and raised
    afterwards. An error or Ctrl-C before that removes every temporary file and leaves
    all destinations untouched. (A SIGKILL between two renames can still mix old and
    new files; the window is a few system calls.)

    Parameters
    ----------
    writers
        Destination path -> callable that writes the complete file to the temporary
        path it is given. Folders are created when missing.

    Returns
    -------
    The destination paths.
    """
    staged: list[tuple[str, Path]] = []
    try:
        for dest, write in writers.items():
            path = Path(dest)
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temp_files(path)
            mode = _target_mode(path)
            staged.append((_temp_path(path), path))
            _write_complete(path, staged[-1][0], write, mode, "nothing was replaced")
        with _hold_sigint() as interrupted:
            for tmp, path in staged:
                os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise
    if interrupted:
        names = ", ".join(p.name for _, p in staged)
        msg = f"Interrupted after {names} were written completely."
        raise KeyboardInterrupt(msg)
    return [path for _, path in staged]


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, sweep: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), sweep=sweep)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))
