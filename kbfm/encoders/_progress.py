"""Make the progress bars of transformers / huggingface_hub follow ``settings.progress``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from .._settings import settings


@contextlib.contextmanager
def library_progress() -> Iterator[None]:
    """Show transformers' and huggingface_hub's bars only when progress is on.

    Inside the block their bars (e.g. "Loading weights") follow
    :attr:`kbfm.settings.progress`; the libraries' own setting is restored afterwards.
    """
    if settings.progress:
        yield
        return
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hub = None
    with contextlib.suppress(ImportError):
        from huggingface_hub.utils import (
            are_progress_bars_disabled,
            disable_progress_bars,
            enable_progress_bars,
        )

        hub = (are_progress_bars_disabled(), disable_progress_bars, enable_progress_bars)
    hf_logging.disable_progress_bar()
    if hub is not None:
        hub[1]()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
        if hub is not None and not hub[0]:
            hub[2]()
