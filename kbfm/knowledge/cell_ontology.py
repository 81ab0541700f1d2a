"""The Cell Ontology, as shipped by the PyPI package ``cellxgene-ontology-guide``.

The package carries each CL release as zstd-compressed JSON (id -> label, definition,
synonyms, ancestors with distances, deprecated flag). We read that file directly: no
network access, about 0.2 s to load.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .._errors import KbfmInputError, KbfmUnavailableError, closest_names

# Terms too generic to make two cell types "related" for partial credit.
GENERIC_TERMS = frozenset(
    {
        "CL:0000000",  # cell
        "CL:0000003",  # native cell
        "CL:0000548",  # animal cell
        "CL:0000255",  # eukaryotic cell
        "CL:0002371",  # somatic cell
    }
)


@dataclass(frozen=True)
class CellTypeTerm:
    """One Cell Ontology term."""

    id: str
    label: str
    definition: str
    synonyms: tuple[str, ...]
    ancestors: tuple[str, ...]


def _package_data() -> Path:
    spec = importlib.util.find_spec("cellxgene_ontology_guide")
    if spec is None or not spec.submodule_search_locations:
        msg = "The Cell Ontology needs the package 'cellxgene-ontology-guide' (pip install it)."
        raise KbfmUnavailableError(msg)
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def available_versions() -> list[str]:
    """Return the CL versions shipped by the installed package, oldest first."""
    names = sorted(p.name for p in _package_data().glob("CL-ontology-*.json.zst"))
    return [n.removeprefix("CL-ontology-").removesuffix(".json.zst") for n in names]


def _normalise(text: str) -> str:
    return re.sub(r"[\s_\-]+", " ", str(text).strip().lower())


class CellOntology:
    """Lookup, hierarchy and text cards over the Cell Ontology.

    Use :meth:`load`; the object is cached per version.

    Examples
    --------
    >>> onto = CellOntology.load()
    >>> onto.term("T-lymphocyte").id
    'CL:0000084'
    >>> onto.is_ancestor("CL:0000084", "CL:0000624")
    True
    """

    def __init__(self, terms: dict[str, CellTypeTerm], version: str) -> None:
        self.terms = terms
        self.version = version
        self._by_label: dict[str, str] = {}
        self._by_synonym: dict[str, str] = {}
        for term in terms.values():
            self._by_label.setdefault(_normalise(term.label), term.id)
        for term in terms.values():
            for syn in term.synonyms:
                self._by_synonym.setdefault(_normalise(syn), term.id)
        self._children: dict[str, list[str]] = {}
        for term in terms.values():
            for anc in term.ancestors:
                self._children.setdefault(anc, []).append(term.id)

    @classmethod
    def load(cls, version: str | None = None) -> CellOntology:
        """Load the Cell Ontology shipped by ``cellxgene-ontology-guide``.

        Parameters
        ----------
        version
            A CL version such as ``"v2026-03-26"``; default: the package's latest.

        Returns
        -------
        The ontology (cached).
        """
        return _load_cached(version)

    def __len__(self) -> int:
        return len(self.terms)

    def __contains__(self, term_id: object) -> bool:
        return isinstance(term_id, str) and self._canonical_id(term_id) in self.terms

    @staticmethod
    def _canonical_id(text: str) -> str:
        return text.strip().upper().replace("_", ":")

    def lookup(self, text: str) -> str | None:
        """Return the id for an id, exact label or synonym (case/hyphen-insensitive), else None."""
        cid = self._canonical_id(str(text))
        if cid in self.terms:
            return cid
        key = _normalise(text)
        return self._by_label.get(key) or self._by_synonym.get(key)

    def term(self, id_or_name: str) -> CellTypeTerm:
        """Return the term for an id, label or synonym.

        Raises
        ------
        KbfmInputError
            When nothing matches; the message suggests the closest labels.
        """
        cid = self.lookup(id_or_name)
        if cid is None:
            hint = closest_names(str(id_or_name), (t.label for t in self.terms.values()))
            msg = (
                f"{id_or_name!r} is not a Cell Ontology id, label or synonym "
                f"({self.version}).{hint}"
            )
            raise KbfmInputError(msg)
        return self.terms[cid]

    def ancestors(self, id_or_name: str) -> list[str]:
        """Return the ids of all ancestors (excluding the term itself)."""
        return list(self.term(id_or_name).ancestors)

    def descendants(self, id_or_name: str, *, include_self: bool = True) -> list[str]:
        """Return the ids of all descendants (and the term itself when ``include_self``)."""
        cid = self.term(id_or_name).id
        found = sorted(self._children.get(cid, []))
        return [cid, *found] if include_self else found

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """True when ``ancestor`` is a strict ancestor of ``descendant``."""
        return self.term(ancestor).id in self.term(descendant).ancestors

    def relation(self, predicted: str, truth: str) -> str:
        """Classify a prediction against the truth.

        Returns
        -------
        ``"full"`` (same term), ``"partial"`` (one is an ancestor of the other, unless
        the ancestor is one of the generic roots in :data:`GENERIC_TERMS`) or ``"none"``.
        """
        p, t = self.lookup(predicted), self.lookup(truth)
        if p is None or t is None:
            return "none"
        if p == t:
            return "full"
        if (p in self.terms[t].ancestors and p not in GENERIC_TERMS) or (
            t in self.terms[p].ancestors and t not in GENERIC_TERMS
        ):
            return "partial"
        return "none"

    def card(self, id_or_name: str, *, markers: list[str] | None = None) -> str:
        """Return the text card of a term, to be embedded by a text encoder.

        Parameters
        ----------
        id_or_name
            The term.
        markers
            Marker genes to list in the card.

        Returns
        -------
        ``"<label>. Also called: ... . Definition: ... . Marker genes: ..."``.
        """
        term = self.term(id_or_name)
        parts = [term.label]
        if term.synonyms:
            parts.append("Also called: " + ", ".join(term.synonyms[:5]))
        if term.definition:
            parts.append("Definition: " + term.definition.rstrip("."))
        if markers:
            parts.append("Marker genes: " + ", ".join(markers))
        return ". ".join(parts) + "."

    def candidates(self, root: str = "leukocyte", *, include_self: bool = True) -> list[str]:
        """Return the ids under ``root`` (deprecated terms are never included)."""
        return self.descendants(root, include_self=include_self)


@lru_cache(maxsize=4)
def _load_cached(version: str | None) -> CellOntology:
    import zstandard

    data = _package_data()
    if version is None:
        info = json.loads((data / "latest_ontology_info.json").read_text())
        version = info["ontologies"]["CL"]["version"]
    path = data / f"CL-ontology-{version}.json.zst"
    if not path.exists():
        msg = f"CL version {version!r} not shipped; available: {available_versions()}."
        raise KbfmInputError(msg)
    with path.open("rb") as fh:
        raw = json.loads(zstandard.ZstdDecompressor().stream_reader(fh).read())
    terms = {
        cid: CellTypeTerm(
            id=cid,
            label=entry.get("label", cid),
            definition=entry.get("description") or "",
            synonyms=tuple(entry.get("synonyms") or ()),
            ancestors=tuple(entry.get("ancestors") or ()),
        )
        for cid, entry in raw.items()
        if cid.startswith("CL:") and not entry.get("deprecated", False)
    }
    return CellOntology(terms, version)
