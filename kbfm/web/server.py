"""Start and stop the web app: local by default, temporary files removed at shutdown."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .._errors import KbfmInputError, KbfmUnavailableError
from .session import SessionStore

log = logging.getLogger("kbfm")

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class RunningServer:
    """A server started with ``block=False``: its address, and how to stop it."""

    url: str
    store: SessionStore
    app: object = field(repr=False)
    _environ: dict = field(default_factory=dict, repr=False)

    def close(self) -> None:
        """Stop the server and remove every temporary file it wrote."""
        try:
            self.app.close(verbose=False)
        finally:
            self.store.close_all()
            _restore(self._environ)


def _restore(environ: dict[str, str | None]) -> None:
    for key, value in environ.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _theme():
    """The default theme with system fonts: the stock ones are fetched from Google."""
    import gradio as gr

    return gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"],
        font_mono=["ui-monospace", "monospace"],
    )


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    max_upload_mb: float = 200.0,
    block: bool = True,
    on_start: Callable[[str], object] | None = None,
) -> RunningServer:
    """Serve the kbfm web app (Gradio) until interrupted, or in the background.

    Parameters
    ----------
    host
        Address to bind. ``127.0.0.1`` (default) is reachable from this machine only;
        ``0.0.0.0`` exposes the app to every network this machine is on (the app has no
        login: do that deliberately, e.g. behind an authenticating proxy).
    port
        TCP port.
    max_upload_mb
        Largest ``.h5ad`` upload, in megabytes.
    block
        Serve until Ctrl-C (then clean up); ``False`` returns at once with a handle.
    on_start
        Called with the app's URL once it listens (the CLI prints it).

    Returns
    -------
    A :class:`RunningServer` (already closed when ``block=True``).

    Examples
    --------
    >>> server = serve(port=7861, block=False)  # doctest: +SKIP
    >>> server.url  # doctest: +SKIP
    'http://127.0.0.1:7861/'
    >>> server.close()  # doctest: +SKIP
    """
    if max_upload_mb <= 0:
        msg = f"max_upload_mb must be positive, got {max_upload_mb}."
        raise KbfmInputError(msg)
    if not 0 < int(port) < 65536:
        msg = f"port must be between 1 and 65535, got {port}."
        raise KbfmInputError(msg)
    try:
        import gradio  # noqa: F401 - only to give the install hint
    except ImportError:
        msg = "kbfm serve needs Gradio: pip install 'kbfm[web]'."
        raise KbfmUnavailableError(msg) from None
    store = SessionStore()
    # Gradio keeps uploads and served files in its own cache: put it under the store's
    # root so it goes away with the sessions, and send nothing to Gradio's analytics.
    wanted = {"GRADIO_TEMP_DIR": str(store.root / "gradio"), "GRADIO_ANALYTICS_ENABLED": "False"}
    previous = {key: os.environ.get(key) for key in wanted}
    os.environ.update(wanted)
    from .app import CSS, build_app

    app = build_app(store, max_upload_mb=max_upload_mb)
    if host not in LOCAL_HOSTS:
        log.warning("kbfm serve: binding %s exposes the app (no login) to other machines.", host)
    try:
        _, url, _ = app.launch(
            server_name=host,
            server_port=int(port),
            max_file_size=f"{max_upload_mb:g}mb",
            share=False,
            ssr_mode=False,
            prevent_thread_lock=True,
            quiet=True,
            footer_links=[],
            allowed_paths=[str(store.root)],
            theme=_theme(),
            css=CSS,
        )
    except OSError as err:
        store.close_all()
        _restore(previous)
        msg = f"Could not start the web app on {host}:{port}: {err}. Is the port in use?"
        raise KbfmUnavailableError(msg) from None
    server = RunningServer(url=url, store=store, app=app, _environ=previous)
    if on_start is not None:
        on_start(url)
    if not block:
        return server
    try:
        while app.is_running:
            time.sleep(0.2)
    except KeyboardInterrupt:
        log.info("kbfm serve: interrupted, shutting down")
    finally:
        server.close()
    return server
