"""mkdocs hook (mkdocs.yml ``hooks:``): one narrow relaxation of ``--strict``.

In a docstring rendered as Markdown, text such as ``uns["kbfm"]["normalize"]`` outside a
code span reads as a reference-style link, and mkdocs-autorefs warns that the target
``"normalize"`` does not exist. A target in quotes is never a Python object, so that
warning is logged at INFO instead; every other warning (missing pages, bad links,
griffe docstring warnings, unknown objects) still fails the strict build.
"""

from __future__ import annotations

import logging
import re

_QUOTED_TARGET = re.compile(r"Could not find cross-reference target '\s*[\"']")


class _QuotedTargetToInfo(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and _QUOTED_TARGET.search(record.getMessage()):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_FILTER = _QuotedTargetToInfo()


def on_config(config):
    for handler in logging.getLogger("mkdocs").handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
    return config
