"""Per-browser-session state and temporary folders, removed when a session or the server ends."""

from __future__ import annotations

import atexit
import logging
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from anndata import AnnData

log = logging.getLogger("kbfm")


@dataclass(eq=False)
class WebSession:
    """What one browser tab works on: its data, its figures and a private folder.

    Parameters
    ----------
    folder
        Private temporary folder; every file the app writes for this tab goes here.
    """

    folder: Path
    adata: AnnData | None = None
    name: str = ""
    stem: str = "data"
    figures: dict[str, Path] = field(default_factory=dict)
    transcript: Path | None = None

    def path(self, filename: str) -> Path:
        """A file name inside the session folder (characters outside ``[A-Za-z0-9._-]`` → ``_``).

        Parameters
        ----------
        filename
            Wanted file name, e.g. ``"tissue_kbfm_celltype.png"``.

        Returns
        -------
        The path inside :attr:`folder` (the folder is created if needed).
        """
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", filename).strip("._") or "file"
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.folder / safe[:120]

    def close(self) -> None:
        """Forget the data and delete the session folder."""
        self.adata = None
        self.figures.clear()
        shutil.rmtree(self.folder, ignore_errors=True)


class SessionStore:
    """Creates sessions under one server-wide temporary root and removes them all at exit.

    Parameters
    ----------
    root
        Parent folder; default: a new ``kbfm-web-*`` folder in the system temp dir
        (removed by :meth:`close_all`, also registered with :mod:`atexit`).

    Examples
    --------
    >>> store = SessionStore()
    >>> session = store.new()
    >>> session.folder.is_dir()
    True
    >>> store.close_all()
    >>> session.folder.exists()
    False
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.owns_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="kbfm-web-")) if root is None else Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._sessions: list[WebSession] = []
        self._lock = threading.Lock()
        atexit.register(self.close_all)

    def new(self) -> WebSession:
        """Start a session with its own folder under :attr:`root`."""
        folder = Path(tempfile.mkdtemp(prefix="session-", dir=self.root))
        session = WebSession(folder=folder)
        with self._lock:
            self._sessions.append(session)
        return session

    def close(self, session: WebSession | None) -> None:
        """Remove one session's folder (a ``None`` session is ignored)."""
        if session is None:
            return
        session.close()
        with self._lock:
            if session in self._sessions:
                self._sessions.remove(session)

    @property
    def sessions(self) -> list[WebSession]:
        """Sessions still open."""
        with self._lock:
            return list(self._sessions)

    def close_all(self) -> None:
        """Remove every session folder, and the root when this store created it."""
        for session in self.sessions:
            self.close(session)
        if self.owns_root:
            shutil.rmtree(self.root, ignore_errors=True)
        log.debug("kbfm web: removed temporary files under %s", self.root)
