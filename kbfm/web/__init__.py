"""``kbfm serve``: a local web app over kbfm (Gradio), with plain-function actions.

:mod:`kbfm.web.actions` holds what the page does as functions on AnnData (no Gradio
needed); :mod:`kbfm.web.app` builds the page; :func:`serve` starts it on 127.0.0.1.
"""

from .server import RunningServer, serve

__all__ = ["RunningServer", "serve"]
