"""Versioned prompt templates shipped with kbfm (``prompts/<id>.v<version>.md``).

Each template starts with a small header (``id``, ``version``, ``purpose``,
``variables``) between ``---`` lines, then the text with ``{variable}`` fields. The id
and version of every prompt used are recorded in ``adata.uns["kbfm"]``.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ._errors import KbfmInputError, closest_names
from ._hashing import sha256_text

_HERE = Path(__file__).resolve().parent


def _prompt_dirs() -> list[Path]:
    # In a wheel the templates live in kbfm/prompts; in a source checkout in ../prompts.
    return [p for p in (_HERE / "prompts", _HERE.parent / "prompts") if p.is_dir()]


@dataclass(frozen=True)
class PromptTemplate:
    """One versioned prompt template."""

    id: str
    version: int
    purpose: str
    variables: tuple[str, ...]
    text: str

    @property
    def key(self) -> str:
        """``"<id>.v<version>"``, as recorded in provenance."""
        return f"{self.id}.v{self.version}"

    @property
    def sha256(self) -> str:
        """Hash of the template text (changes whenever the wording changes)."""
        return sha256_text(self.text)[:16]

    def render(self, **values: object) -> str:
        """Fill the template; every declared variable must be given, and no other."""
        fields = {f for _, f, _, _ in string.Formatter().parse(self.text) if f}
        missing = sorted(fields - set(values))
        extra = sorted(set(values) - fields)
        if missing or extra:
            msg = f"Prompt {self.key}: missing values {missing}, unexpected values {extra}."
            raise KbfmInputError(msg)
        return self.text.format(**values)


def _parse(path: Path) -> PromptTemplate:
    raw = path.read_text()
    match = re.match(r"^---\n(.*?)\n---\n(.*)$", raw, flags=re.DOTALL)
    if not match:
        msg = f"Prompt file {path} lacks its '---' header."
        raise KbfmInputError(msg)
    header = dict(line.split(":", 1) for line in match.group(1).splitlines() if ":" in line)
    header = {k.strip(): v.strip() for k, v in header.items()}
    variables = tuple(v.strip() for v in header.get("variables", "").split(",") if v.strip())
    return PromptTemplate(
        id=header["id"],
        version=int(header["version"]),
        purpose=header.get("purpose", ""),
        variables=variables,
        text=match.group(2).strip() + "\n",
    )


@lru_cache(maxsize=1)
def list_prompts() -> dict[str, PromptTemplate]:
    """Return every shipped template, keyed ``"<id>.v<version>"``."""
    found: dict[str, PromptTemplate] = {}
    for folder in _prompt_dirs():
        for path in sorted(folder.glob("*.v*.md")):
            template = _parse(path)
            found.setdefault(template.key, template)
    return found


def load_prompt(prompt_id: str, version: int | None = None) -> PromptTemplate:
    """Return a template by id (latest version unless ``version`` is given).

    Examples
    --------
    >>> load_prompt("celltype_annotation").version
    1
    """
    versions = [t for t in list_prompts().values() if t.id == prompt_id]
    if version is not None:
        versions = [t for t in versions if t.version == version]
    if not versions:
        known = sorted({t.id for t in list_prompts().values()})
        msg = (
            f"No prompt {prompt_id!r}"
            + (f" version {version}" if version else "")
            + f"; shipped: {known}.{closest_names(prompt_id, known)}"
        )
        raise KbfmInputError(msg)
    return max(versions, key=lambda t: t.version)
