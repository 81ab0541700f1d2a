"""The Cell Ontology (CL), read from the release shipped by ``cellxgene-ontology-guide``.

That PyPI package carries each CL release as zstd-compressed JSON: a dict
``id -> {label, description, synonyms, ancestors: {id: distance}, deprecated}``. We read
the file directly (no network, no import of the package; about 0.2 s), so lookups work
offline and the CL version is recorded with every result.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .._errors import KbfmInputError, KbfmUnavailableError, closest_names

#: Terms too generic for two cell types to count as related: a prediction of "cell" for
#: a T cell earns no partial credit in :meth:`CellOntology.relation`. Some of these are
#: obsolete in recent CL releases; they stay here for older releases.
GENERIC_TERMS = frozenset(
    {
        "CL:0000000",  # cell
        "CL:0000003",  # native cell
        "CL:0000548",  # animal cell
        "CL:0000255",  # eukaryotic cell
        "CL:0002371",  # somatic cell
    }
)

_ID = re.compile(r"^(?:.*[/#])?CL[:_](\d{7})$", re.IGNORECASE)


@dataclass(frozen=True)
class CellTypeTerm:
    """One Cell Ontology term.

    Attributes
    ----------
    id
        CURIE such as ``"CL:0000084"``.
    label
        Preferred name.
    definition
        Textual definition (may be empty).
    synonyms
        Exact and related synonyms as listed by the release.
    ancestors
        Ids of all ancestors (``is_a`` and ``part_of`` closure), nearest first; the term
        itself is not included.
    """

    id: str
    label: str
    definition: str
    synonyms: tuple[str, ...]
    ancestors: tuple[str, ...]


def _package_data() -> Path:
    spec = importlib.util.find_spec("cellxgene_ontology_guide")
    if spec is None or not spec.submodule_search_locations:
        msg = (
            "The Cell Ontology is read from the package 'cellxgene-ontology-guide', which "
            "is not installed; install it with `pip install cellxgene-ontology-guide`."
        )
        raise KbfmUnavailableError(msg)
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def available_versions() -> list[str]:
    """Return the CL versions shipped by the installed package, oldest first.

    Returns
    -------
    Versions such as ``["v2025-02-13", ..., "v2026-03-26"]``.

    Examples
    --------
    >>> available_versions()[-1].startswith("v20")
    True
    """
    names = sorted(p.name for p in _package_data().glob("CL-ontology-*.json.zst"))
    return [n.removeprefix("CL-ontology-").removesuffix(".json.zst") for n in names]


def _normalise(text: str) -> str:
    """Lower-case and fold runs of spaces, hyphens, underscores and commas into one space."""
    return re.sub(r"[\s_\-,]+", " ", str(text)).strip().lower()


class CellOntology:
    """Lookup, hierarchy and text cards over one Cell Ontology release.

    Create it with :meth:`load` (cached per version). Obsolete terms are kept apart in
    :attr:`obsolete` and never returned by lookups; asking for one by id raises an error
    that names its replacement.

    Attributes
    ----------
    version
        The CL release, e.g. ``"v2026-03-26"``.
    terms
        ``{id: CellTypeTerm}`` for the live (non-obsolete) terms.
    obsolete
        ``{id: CellTypeTerm}`` for the obsolete terms.

    Examples
    --------
    >>> onto = CellOntology.load()
    >>> onto.term("T-lymphocyte").id
    'CL:0000084'
    >>> onto.is_ancestor("T cell", "regulatory T cell")
    True
    """

    def __init__(
        self,
        terms: dict[str, CellTypeTerm],
        version: str,
        *,
        obsolete: dict[str, CellTypeTerm] | None = None,
        replaced_by: dict[str, str] | None = None,
    ) -> None:
        self.terms = terms
        self.version = version
        self.obsolete = obsolete or {}
        self._replaced_by = replaced_by or {}
        self._by_label: dict[str, str] = {}
        self._by_synonym: dict[str, str] = {}
        for term in terms.values():
            self._by_label.setdefault(_normalise(term.label), term.id)
        for term in terms.values():
            for syn in term.synonyms:
                self._by_synonym.setdefault(_normalise(syn), term.id)
        self._children: dict[str, set[str]] = {}
        for term in terms.values():
            for anc in term.ancestors:
                self._children.setdefault(anc, set()).add(term.id)

    @classmethod
    def load(cls, version: str | None = None) -> CellOntology:
        """Load a Cell Ontology release shipped by ``cellxgene-ontology-guide``.

        Parameters
        ----------
        version
            A CL version such as ``"v2026-03-26"`` (the leading ``v`` is optional);
            default: the package's current release. See :func:`available_versions`.

        Returns
        -------
        The ontology; repeated calls return the same cached object.

        Examples
        --------
        >>> len(CellOntology.load()) > 3000
        True
        """
        if version is None:
            info = json.loads((_package_data() / "latest_ontology_info.json").read_text())
            version = info["ontologies"]["CL"]["version"]
        version = version if version.startswith("v") else f"v{version}"
        return _load_release(version)

    def __len__(self) -> int:
        return len(self.terms)

    def __contains__(self, id_or_name: object) -> bool:
        return isinstance(id_or_name, str) and self.lookup(id_or_name) is not None

    def __repr__(self) -> str:
        return f"CellOntology(version={self.version!r}, n_terms={len(self)})"

    def lookup(self, text: str) -> str | None:
        """Return the id of a term named exactly by ``text``, else ``None``.

        ``text`` may be an id (``"CL:0000084"``, ``"CL_0000084"`` or an OBO PURL), a
        label, or a synonym. Matching ignores case and treats runs of spaces, hyphens,
        underscores and commas alike; labels are tried before synonyms. It is never
        fuzzy, and obsolete terms are never returned.

        Parameters
        ----------
        text
            What to look up.

        Returns
        -------
        The CL id, or ``None``.

        Examples
        --------
        >>> CellOntology.load().lookup("t cell")
        'CL:0000084'
        """
        match = _ID.match(str(text).strip())
        if match:
            cid = f"CL:{match.group(1)}"
            return cid if cid in self.terms else None
        key = _normalise(text)
        return self._by_label.get(key) or self._by_synonym.get(key)

    def term(self, id_or_name: str) -> CellTypeTerm:
        """Return the term named by an id, label or synonym (see :meth:`lookup`).

        Parameters
        ----------
        id_or_name
            The term.

        Returns
        -------
        The :class:`CellTypeTerm`.

        Raises
        ------
        KbfmInputError
            When nothing matches (the message suggests the closest labels), or when the
            id is obsolete (the message names the replacement when CL gives one).

        Examples
        --------
        >>> CellOntology.load().term("CL_0000236").label
        'B cell'
        """
        cid = self.lookup(id_or_name)
        if cid is not None:
            return self.terms[cid]
        match = _ID.match(str(id_or_name).strip())
        if match and f"CL:{match.group(1)}" in self.obsolete:
            old = f"CL:{match.group(1)}"
            new = self._replaced_by.get(old)
            hint = f" Use {new} ({self.terms[new].label!r}) instead." if new in self.terms else ""
            msg = f"{old} ({self.obsolete[old].label!r}) is obsolete in CL {self.version}.{hint}"
            raise KbfmInputError(msg)
        hint = closest_names(str(id_or_name), (t.label for t in self.terms.values()))
        msg = (
            f"{id_or_name!r} is not a Cell Ontology id, label or synonym in CL "
            f"{self.version}.{hint} Browse terms with CellOntology.load().terms."
        )
        raise KbfmInputError(msg)

    def ancestors(self, id_or_name: str) -> list[str]:
        """Return the ids of all ancestors of a term, nearest first (the term excluded).

        Examples
        --------
        >>> "CL:0000084" in CellOntology.load().ancestors("regulatory T cell")
        True
        """
        return list(self.term(id_or_name).ancestors)

    def descendants(self, id_or_name: str, *, include_self: bool = True) -> list[str]:
        """Return the ids of all descendants of a term (sorted), and the term itself first.

        Parameters
        ----------
        id_or_name
            The term.
        include_self
            Put the term's own id first in the list.

        Returns
        -------
        CL ids.

        Examples
        --------
        >>> "CL:0000815" in CellOntology.load().descendants("T cell")
        True
        """
        cid = self.term(id_or_name).id
        found = sorted(self._children.get(cid, ()))
        return [cid, *found] if include_self else found

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """Return whether ``ancestor`` is a strict ancestor of ``descendant``.

        Examples
        --------
        >>> CellOntology.load().is_ancestor("T cell", "T cell")
        False
        """
        return self.term(ancestor).id in self.term(descendant).ancestors

    def relation(self, predicted: str, truth: str) -> str:
        """Grade a predicted cell type against the true one.

        Parameters
        ----------
        predicted, truth
            Ids, labels or synonyms. A name that is not a live CL term grades ``"none"``
            (predictions such as ``"unknown"`` are legitimate).

        Returns
        -------
        ``"full"`` when both name the same term; ``"partial"`` when one is an ancestor of
        the other, unless that ancestor is one of the generic roots in
        :data:`GENERIC_TERMS` (cell, native cell, animal cell, eukaryotic cell, somatic
        cell); otherwise ``"none"``.

        Examples
        --------
        >>> CellOntology.load().relation("T cell", "regulatory T cell")
        'partial'
        """
        p, t = self.lookup(predicted), self.lookup(truth)
        if p is None or t is None:
            return "none"
        if p == t:
            return "full"
        if p in self.terms[t].ancestors and p not in GENERIC_TERMS:
            return "partial"
        if t in self.terms[p].ancestors and t not in GENERIC_TERMS:
            return "partial"
        return "none"

    def card(
        self, id_or_name: str, markers: list[str] | None = None, *, max_synonyms: int = 5
    ) -> str:
        """Return a term's text card, the text a text encoder embeds for it.

        Parameters
        ----------
        id_or_name
            The term.
        markers
            Marker genes to list at the end.
        max_synonyms
            Keep at most this many synonyms (in release order).

        Returns
        -------
        ``"<label>. Synonyms: a, b. Definition: <definition>. Marker genes: X, Y."``;
        parts with nothing to say are left out.

        Examples
        --------
        >>> CellOntology.load().card("B cell", ["MS4A1"]).endswith("Marker genes: MS4A1.")
        True
        """
        term = self.term(id_or_name)
        parts = [term.label]
        synonyms = term.synonyms[:max_synonyms]
        if synonyms:
            parts.append("Synonyms: " + ", ".join(synonyms))
        definition = term.definition.strip().rstrip(".")
        if definition:
            parts.append("Definition: " + definition)
        if markers:
            parts.append("Marker genes: " + ", ".join(markers))
        return ". ".join(parts) + "."

    def candidates(
        self, root: str = "leukocyte", *, include_self: bool = True, exclude_deprecated: bool = True
    ) -> list[str]:
        """Return the cell types under ``root``: candidate labels for annotation.

        Parameters
        ----------
        root
            Id, label or synonym of the subtree's root.
        include_self
            Include ``root`` itself (first).
        exclude_deprecated
            Obsolete terms carry no ancestry in CL releases, so they never sit under a
            root. With ``False``, the obsolete terms whose CL replacement lies in the
            subtree are appended (useful to read labels of older annotations).

        Returns
        -------
        CL ids.

        Examples
        --------
        >>> "CL:0000236" in CellOntology.load().candidates("lymphocyte")
        True
        """
        ids = self.descendants(root, include_self=include_self)
        if exclude_deprecated:
            return ids
        inside = set(ids)
        old = sorted(o for o, new in self._replaced_by.items() if new in inside)
        return ids + old


@lru_cache(maxsize=4)
def _load_release(version: str) -> CellOntology:
    import zstandard

    path = _package_data() / f"CL-ontology-{version}.json.zst"
    if not path.is_file():
        msg = (
            f"CL version {version!r} is not shipped by the installed "
            f"cellxgene-ontology-guide; choose one of {available_versions()}."
        )
        raise KbfmInputError(msg)
    with path.open("rb") as fh:
        raw = json.loads(zstandard.ZstdDecompressor().stream_reader(fh).read())
    live: dict[str, CellTypeTerm] = {}
    obsolete: dict[str, CellTypeTerm] = {}
    replaced_by: dict[str, str] = {}
    for cid, entry in raw.items():
        if not cid.startswith("CL:"):
            continue
        ancestors = entry.get("ancestors") or {}
        term = CellTypeTerm(
            id=cid,
            label=entry.get("label") or cid,
            definition=entry.get("description") or "",
            synonyms=tuple(entry.get("synonyms") or ()),
            ancestors=tuple(sorted(ancestors, key=lambda a: (ancestors[a], a))),
        )
        if entry.get("deprecated", False):
            obsolete[cid] = term
            if str(entry.get("replaced_by", "")).startswith("CL:"):
                replaced_by[cid] = entry["replaced_by"]
        else:
            live[cid] = term
    return CellOntology(live, version, obsolete=obsolete, replaced_by=replaced_by)
