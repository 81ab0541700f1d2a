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
from pathlib import Path

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


# --------------------------------------------------------------------------- tutorials
# The tutorials in notebooks/ (jupytext percent format, executed by tests/test_notebooks.py)
# become pages tutorials/<name>.md: markdown cells as text, code cells as Python blocks.

_NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def tutorial_markdown(source: str) -> str:
    """Render a percent-format script as Markdown (text cells, then fenced code cells)."""
    blocks: list[tuple[str, list[str]]] = []
    for line in source.splitlines():
        if line.startswith("# %%"):
            blocks.append(("markdown" if "[markdown]" in line else "code", []))
            continue
        if not blocks:
            blocks.append(("code", []))
        blocks[-1][1].append(line)
    parts = []
    for kind, lines in blocks:
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
        if not lines:
            continue
        if kind == "markdown":
            parts.append(
                "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in lines)
            )
        else:
            parts.append("```python\n" + "\n".join(lines) + "\n```")
    return "\n\n".join(parts) + "\n"


def on_files(files, config):
    from mkdocs.structure.files import File

    for script in sorted(_NOTEBOOKS.glob("[0-9][0-9]_*.py")):
        note = (
            f"\n\n*Source: `notebooks/{script.name}`; run it with `python {script.name}` "
            "from that folder (figures go to `$KBFM_TUTORIAL_OUT`).*\n"
        )
        page = tutorial_markdown(script.read_text())
        first, _, rest = page.partition("\n")
        files.append(
            File.generated(config, f"tutorials/{script.stem}.md", content=first + note + rest)
        )
    return files
