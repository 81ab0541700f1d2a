"""Gene Ontology annotations read offline from Bioconductor's SQLite files, without R.

Debian packages Bioconductor's annotation databases (``r-bioc-org.hs.eg.db``,
``r-bioc-org.mm.eg.db``, ``r-bioc-go.db``); each ships a plain SQLite file. kbfm reads them
directly: ``org.<Hs|Mm>.eg.sqlite`` gives gene -> GO id + evidence code (tables
``gene_info``, ``go_bp``, ``go_mf``, ``go_cc``) and ``GO.sqlite`` gives the term names and
definitions (table ``go_term``). Get the files with ``make go-db`` (``apt-get download`` then
``dpkg-deb -x``, so R is not installed) or point ``$KBFM_GO_DB_DIR`` at a folder holding them.

Everything here is optional: when the databases are absent, :func:`find_go_databases`
returns ``None``, :func:`go_annotations` and :func:`go_term_definitions` return empty
dicts and :func:`go_status` says what was searched. Only a path given explicitly that is
missing, or a file that is not a Bioconductor SQLite database, raises
:class:`~kbfm._errors.KbfmInputError`.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .._atomic import atomic_write_bytes
from .._errors import KbfmInputError, closest_names
from .._settings import settings

logger = logging.getLogger(__name__)

__all__ = [
    "EVIDENCE_ORDER",
    "GODatabases",
    "GOTerm",
    "find_go_databases",
    "go_annotations",
    "go_status",
    "go_term_definitions",
]

#: Species name -> Bioconductor organism code (``org.<code>.eg.db``).
SPECIES_CODES: dict[str, str] = {"human": "Hs", "mouse": "Mm"}

#: Ontology code -> table in the org database.
ONTOLOGY_TABLES: dict[str, str] = {"BP": "go_bp", "MF": "go_mf", "CC": "go_cc"}

#: GO evidence codes from strongest to weakest: experimental, high-throughput,
#: phylogenetic, computational, author and curator statements, then electronic (IEA)
#: and "no data" (ND). Codes not listed rank after all of these.
EVIDENCE_ORDER: tuple[str, ...] = (
    "EXP", "IDA", "IPI", "IMP", "IGI", "IEP",
    "HTP", "HDA", "HMP", "HGI", "HEP",
    "IBA", "IBD", "IKR", "IRD",
    "ISS", "ISO", "ISA", "ISM", "IGC", "RCA",
    "TAS", "IC", "NAS",
    "IEA", "ND",
)  # fmt: skip
_EVIDENCE_RANK = {code: i for i, code in enumerate(EVIDENCE_ORDER)}
_UNKNOWN_RANK = len(EVIDENCE_ORDER)

#: System R library folders searched after ``$KBFM_GO_DB_DIR`` and the kbfm cache.
SYSTEM_R_LIBRARIES: tuple[Path, ...] = (
    Path("/usr/lib/R/site-library"),
    Path("/usr/local/lib/R/site-library"),
)

_GO_FILE = "GO.sqlite"
_GO_PACKAGE = "GO.db"
_CACHE_FORMAT = 2


@dataclass(frozen=True)
class GODatabases:
    """Paths to the two SQLite files that make up one species' GO annotations.

    Attributes
    ----------
    species
        ``"human"`` or ``"mouse"``.
    org_db
        ``org.Hs.eg.sqlite`` or ``org.Mm.eg.sqlite`` (genes and their GO ids).
    go_db
        ``GO.sqlite`` (term names, ontologies and definitions).
    """

    species: str
    org_db: Path
    go_db: Path


@dataclass(frozen=True)
class GOTerm:
    """One GO term annotated to one gene.

    Attributes
    ----------
    go_id
        E.g. ``"GO:0042110"``.
    term
        The term name, e.g. ``"T cell activation"``.
    ontology
        ``"BP"`` (biological process), ``"MF"`` (molecular function) or
        ``"CC"`` (cellular component).
    evidence
        The evidence codes supporting this gene-term pair, strongest first
        (see :data:`EVIDENCE_ORDER`).
    n_genes
        How many genes of the species carry this term or one of its descendants (any
        evidence); fewer means more specific.
    """

    go_id: str
    term: str
    ontology: str
    evidence: tuple[str, ...]
    n_genes: int

    @property
    def experimental(self) -> bool:
        """True when at least one evidence code is experimental (EXP/IDA/IPI/IMP/IGI/IEP)."""
        return any(_EVIDENCE_RANK.get(code, _UNKNOWN_RANK) < 6 for code in self.evidence)


# --------------------------------------------------------------------------- locating


def _species_code(species: str) -> str:
    key = str(species).strip().lower()
    if key not in SPECIES_CODES:
        msg = (
            f"GO annotations are available for species {list(SPECIES_CODES)}, got {species!r}."
            + closest_names(key, SPECIES_CODES)
        )
        raise KbfmInputError(msg)
    return SPECIES_CODES[key]


def _org_names(species: str) -> tuple[str, str]:
    code = _species_code(species)
    return f"org.{code}.eg.db", f"org.{code}.eg.sqlite"


def _candidates(root: Path, package: str, filename: str) -> list[Path]:
    """Where ``filename`` may sit under ``root``: directly, R library or Debian tree."""
    return [
        root / filename,
        root / "extdata" / filename,
        root / package / "extdata" / filename,
        root / "usr" / "lib" / "R" / "site-library" / package / "extdata" / filename,
        root / "usr" / "local" / "lib" / "R" / "site-library" / package / "extdata" / filename,
    ]


def _find_in(root: Path, package: str, filename: str) -> Path | None:
    for candidate in _candidates(root, package, filename):
        if candidate.is_file():
            return candidate
    return None


def _search_roots() -> list[Path]:
    roots: list[Path] = []
    env = os.environ.get("KBFM_GO_DB_DIR", "").strip()
    if env:
        roots.append(Path(env).expanduser())
    roots.append(Path(settings.cache_dir) / "knowledge" / "debian")
    roots.extend(SYSTEM_R_LIBRARIES)
    return roots


def _find_pair(roots: list[Path], species: str) -> tuple[Path | None, Path | None]:
    """The first org database and a GO.sqlite, preferring one from the same root."""
    package, filename = _org_names(species)
    org_db = go_db = None
    org_root = None
    for root in roots:
        if org_db is None:
            org_db = _find_in(root, package, filename)
            org_root = root if org_db is not None else None
        if go_db is None:
            go_db = _find_in(root, _GO_PACKAGE, _GO_FILE)
    if org_root is not None:
        go_db = _find_in(org_root, _GO_PACKAGE, _GO_FILE) or go_db
    return org_db, go_db


def find_go_databases(species: str = "human") -> GODatabases | None:
    """Locate the Bioconductor SQLite files for ``species``, or return ``None``.

    Searched in order: ``$KBFM_GO_DB_DIR``, ``<cache_dir>/knowledge/debian`` (where
    ``make go-db`` extracts the Debian packages) and the system R site libraries
    (:data:`SYSTEM_R_LIBRARIES`). Each folder may hold the ``.sqlite`` files directly,
    an R library (``org.Hs.eg.db/extdata/org.Hs.eg.sqlite``) or a Debian-extracted tree
    (``usr/lib/R/site-library/...``). ``GO.sqlite`` is taken from the folder that holds
    the org database when it is there, else from the first folder that has one.

    Parameters
    ----------
    species
        ``"human"`` (``org.Hs.eg.sqlite``) or ``"mouse"`` (``org.Mm.eg.sqlite``).

    Returns
    -------
    The paths, or ``None`` when either file is not found (never raises for absent files).

    Raises
    ------
    KbfmInputError
        For an unknown species.
    """
    org_db, go_db = _find_pair(_search_roots(), species)
    if org_db is None or go_db is None:
        return None
    return GODatabases(species=str(species).strip().lower(), org_db=org_db, go_db=go_db)


def _resolve(species: str, path: str | os.PathLike | GODatabases | None) -> GODatabases | None:
    """Databases from an explicit ``path`` (errors when missing) or the search."""
    if path is None:
        return find_go_databases(species)
    if isinstance(path, GODatabases):
        for file in (path.org_db, path.go_db):
            if not Path(file).is_file():
                msg = f"GO database file not found: {file}"
                raise KbfmInputError(msg)
        return path
    path = Path(path).expanduser()
    if not path.exists():
        msg = f"GO database path not found: {path}"
        raise KbfmInputError(msg)
    package, filename = _org_names(species)
    if path.is_dir():
        org_db, go_db = _find_pair([path], species)
        if org_db is None:
            msg = (
                f"No {filename} under {path} (looked for it directly, in "
                f"{package}/extdata/ and in a Debian tree usr/lib/R/site-library/)."
            )
            raise KbfmInputError(msg)
    else:
        org_db = path
        go_db = _find_in(path.parent, _GO_PACKAGE, _GO_FILE)
        if go_db is None and path.parent.name == "extdata":
            # An R library: <lib>/org.Hs.eg.db/extdata/org.Hs.eg.sqlite -> <lib>/GO.db/...
            go_db = _find_in(path.parents[2], _GO_PACKAGE, _GO_FILE)
    if go_db is None:
        found = find_go_databases(species)
        go_db = found.go_db if found is not None else None
    if go_db is None:
        msg = (
            f"Found {org_db} but no {_GO_FILE} next to it or in the default locations; "
            "it is needed for the term names (Debian package r-bioc-go.db)."
        )
        raise KbfmInputError(msg)
    return GODatabases(species=str(species).strip().lower(), org_db=org_db, go_db=go_db)


def _resolve_go_file(path: str | os.PathLike | GODatabases | None) -> Path | None:
    if path is None:
        roots = _search_roots()
    elif isinstance(path, GODatabases):
        return Path(path.go_db)
    else:
        path = Path(path).expanduser()
        if not path.exists():
            msg = f"GO database path not found: {path}"
            raise KbfmInputError(msg)
        if path.is_file():
            return path
        roots = [path]
    for root in roots:
        found = _find_in(root, _GO_PACKAGE, _GO_FILE)
        if found is not None:
            return found
    if path is not None:
        msg = f"No {_GO_FILE} under {path}."
        raise KbfmInputError(msg)
    return None


# --------------------------------------------------------------------------- SQLite


def _ro_uri(path: Path) -> str:
    return Path(path).resolve().as_uri() + "?mode=ro"


def _tables(con: sqlite3.Connection, schema: str, path: Path) -> set[str]:
    try:
        rows = con.execute(f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table'")
        return {name for (name,) in rows}
    except sqlite3.DatabaseError as err:
        msg = f"{path} is not a valid SQLite database ({err})."
        raise KbfmInputError(msg) from err


def _require(tables: set[str], needed: Iterable[str], path: Path, what: str) -> None:
    missing = [t for t in needed if t not in tables]
    if missing:
        msg = (
            f"{path} lacks table(s) {missing} expected in {what}; is it a Bioconductor "
            "annotation database?"
        )
        raise KbfmInputError(msg)


def _connect(dbs: GODatabases, org_tables: Iterable[str]) -> sqlite3.Connection:
    """Open the org database read-only with GO.sqlite attached as ``godb``; validate both."""
    org_path, go_path = Path(dbs.org_db), Path(dbs.go_db)
    try:
        con = sqlite3.connect(_ro_uri(org_path), uri=True)
    except sqlite3.Error as err:
        msg = f"Cannot open {org_path} as an SQLite database ({err})."
        raise KbfmInputError(msg) from err
    try:
        _require(_tables(con, "main", org_path), org_tables, org_path, "an org.*.eg.db file")
        try:
            con.execute("ATTACH DATABASE ? AS godb", (_ro_uri(go_path),))
        except sqlite3.Error as err:
            msg = f"Cannot open {go_path} as an SQLite database ({err})."
            raise KbfmInputError(msg) from err
        _require(_tables(con, "godb", go_path), ["go_term"], go_path, "GO.sqlite")
    except BaseException:
        con.close()
        raise
    return con


def _open_single(path: Path, needed: Iterable[str], what: str) -> sqlite3.Connection:
    try:
        con = sqlite3.connect(_ro_uri(path), uri=True)
    except sqlite3.Error as err:
        msg = f"Cannot open {path} as an SQLite database ({err})."
        raise KbfmInputError(msg) from err
    try:
        _require(_tables(con, "main", path), needed, path, what)
    except BaseException:
        con.close()
        raise
    return con


def _metadata(con: sqlite3.Connection, schema: str = "main") -> dict[str, str]:
    try:
        rows = con.execute(f"SELECT name, value FROM {schema}.metadata").fetchall()
    except sqlite3.DatabaseError:
        return {}
    return {str(k): str(v) for k, v in rows if k is not None and v is not None}


def _file_key(path: Path) -> tuple[str, int, int]:
    st = Path(path).stat()
    return str(Path(path).resolve()), st.st_size, st.st_mtime_ns


# --------------------------------------------------------------------------- reading


def _query(table: str, all_table: str | None) -> str:
    """One query per ontology: direct annotations with names and gene counts per term.

    Gene counts come from the propagated ``go_*_all`` table when the database has it
    (genes annotated to the term or any descendant, the usual basis for information
    content), else from the direct annotations.
    """
    counts = all_table or table
    return f"""
        WITH counts AS (
            SELECT go_id, COUNT(DISTINCT _id) AS n_genes FROM {counts} GROUP BY go_id
        )
        SELECT gi.symbol, a.go_id, a.evidence, t.term, t.ontology, COALESCE(c.n_genes, 0)
        FROM {table} AS a
        JOIN gene_info AS gi ON gi._id = a._id
        JOIN godb.go_term AS t ON t.go_id = a.go_id
        LEFT JOIN counts AS c ON c.go_id = a.go_id
    """


def _read_databases(dbs: GODatabases) -> dict:
    """Every annotation of the org database (all evidence), as the cache payload.

    The payload is compact: ``terms`` is a list of ``[go_id, name, ontology, n_genes]``,
    ``evidence_sets`` a list of evidence-code lists (strongest first) and ``genes`` maps a
    symbol to a flat list ``[term index, evidence-set index, ...]`` in ranking order.
    """
    con = _connect(dbs, ["gene_info", *ONTOLOGY_TABLES.values()])
    try:
        tables = _tables(con, "main", Path(dbs.org_db))
        terms: dict[str, list] = {}
        pairs: dict[str, dict[str, set[str]]] = {}
        for table in ONTOLOGY_TABLES.values():
            all_table = f"{table}_all" if f"{table}_all" in tables else None
            for symbol, go_id, evidence, term, ontology, n_genes in con.execute(
                _query(table, all_table)
            ):
                if not symbol:
                    continue
                entry = terms.get(go_id)
                if entry is None:
                    terms[go_id] = [go_id, term, ontology, int(n_genes)]
                else:
                    entry[3] = max(entry[3], int(n_genes))
                pairs.setdefault(symbol, {}).setdefault(go_id, set()).add(str(evidence))
        org_meta = _metadata(con, "main")
        go_meta = _metadata(con, "godb")
    except sqlite3.DatabaseError as err:
        msg = f"Could not read GO annotations from {dbs.org_db} / {dbs.go_db} ({err})."
        raise KbfmInputError(msg) from err
    finally:
        con.close()
    term_index = {go_id: i for i, go_id in enumerate(terms)}
    evidence_index: dict[tuple[str, ...], int] = {}
    genes: dict[str, list[int]] = {}
    for symbol, by_term in pairs.items():
        rows = [(go_id, _sort_evidence(codes)) for go_id, codes in by_term.items()]
        rows.sort(key=lambda r: (terms[r[0]][3], _best_rank(r[1]), r[0]))
        flat: list[int] = []
        for go_id, codes in rows:
            flat.append(term_index[go_id])
            flat.append(evidence_index.setdefault(codes, len(evidence_index)))
        genes[symbol] = flat
    return {
        "format": _CACHE_FORMAT,
        "species": dbs.species,
        "org_db": list(_file_key(Path(dbs.org_db))),
        "go_db": list(_file_key(Path(dbs.go_db))),
        "org_metadata": org_meta,
        "go_metadata": go_meta,
        "terms": list(terms.values()),
        "evidence_sets": [list(codes) for codes in evidence_index],
        "genes": genes,
    }


def _sort_evidence(codes: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(codes), key=lambda c: (_EVIDENCE_RANK.get(c, _UNKNOWN_RANK), c)))


def _best_rank(codes: Iterable[str]) -> int:
    return min((_EVIDENCE_RANK.get(c, _UNKNOWN_RANK) for c in codes), default=_UNKNOWN_RANK)


def _term_key(term: GOTerm) -> tuple[int, int, str]:
    """Most specific first (fewest genes), then strongest evidence, then the id."""
    return (term.n_genes, _best_rank(term.evidence), term.go_id)


def _cache_path(dbs: GODatabases) -> Path:
    st = Path(dbs.org_db).stat()
    name = f"{dbs.species}-{st.st_size}-{int(st.st_mtime)}.json.gz"
    return Path(settings.cache_dir) / "knowledge" / "go" / name


def _valid_payload(payload: object, dbs: GODatabases) -> bool:
    if not isinstance(payload, dict) or payload.get("format") != _CACHE_FORMAT:
        return False
    if payload.get("org_db") != list(_file_key(Path(dbs.org_db))):
        return False
    if payload.get("go_db") != list(_file_key(Path(dbs.go_db))):
        return False
    terms, evsets, genes = (payload.get(k) for k in ("terms", "evidence_sets", "genes"))
    if not (isinstance(terms, list) and isinstance(evsets, list) and isinstance(genes, dict)):
        return False
    # Structural check (cheap): every index in range, so a damaged file cannot crash.
    n_terms, n_sets = len(terms), len(evsets)
    for flat in genes.values():
        if not isinstance(flat, list) or len(flat) % 2 or not flat:
            return False
        if min(flat) < 0 or max(flat[::2]) >= n_terms or max(flat[1::2]) >= n_sets:
            return False
    return True


def _read_cache(path: Path, dbs: GODatabases) -> dict | None:
    """The cached payload, or ``None`` when absent, unreadable or for other files."""
    if not path.is_file():
        return None
    try:
        with gzip.open(path, "rb") as fh:
            payload = json.loads(fh.read())
        valid = _valid_payload(payload, dbs)
    except (OSError, EOFError, ValueError, TypeError) as err:
        logger.warning("Ignoring unreadable GO cache %s (%s); recomputing.", path, err)
        return None
    if not valid:
        logger.warning("GO cache %s is invalid or for other files; recomputing.", path)
        return None
    return payload


def _write_cache(path: Path, payload: dict) -> None:
    data = gzip.compress(json.dumps(payload, separators=(",", ":")).encode("utf-8"), 6)
    try:
        atomic_write_bytes(path, data)
    except OSError as err:  # a read-only cache must not break the lookup
        logger.warning("Could not write the GO cache %s (%s).", path, err)


@lru_cache(maxsize=4)
def _load(
    species: str, org_key: tuple[str, int, int], go_key: tuple[str, int, int]
) -> tuple[list[tuple[str, str, str, int]], list[tuple[str, ...]], dict[str, list[int]]]:
    """Terms, evidence sets and per-gene index lists of one pair of files.

    The keys hold each file's resolved path, size and mtime, so an updated database is
    read again rather than served from memory.
    """
    dbs = GODatabases(species=species, org_db=Path(org_key[0]), go_db=Path(go_key[0]))
    cache = _cache_path(dbs)
    payload = _read_cache(cache, dbs)
    parsed = _parse_payload(payload, cache) if payload is not None else None
    if parsed is None:
        payload = _read_databases(dbs)
        _write_cache(cache, payload)
        parsed = _parse_payload(payload, cache)
        if parsed is None:  # pragma: no cover - our own payload always parses
            msg = f"Could not parse the GO annotations read from {dbs.org_db}."
            raise KbfmInputError(msg)
    return parsed


def _parse_payload(
    payload: dict, source: Path
) -> tuple[list[tuple[str, str, str, int]], list[tuple[str, ...]], dict[str, list[int]]] | None:
    try:
        terms = [(str(g), str(n), str(o), int(c)) for g, n, o, c in payload["terms"]]
        evidence_sets = [tuple(str(c) for c in codes) for codes in payload["evidence_sets"]]
    except (KeyError, TypeError, ValueError) as err:
        logger.warning("Ignoring malformed GO cache %s (%s); recomputing.", source, err)
        return None
    return terms, evidence_sets, payload["genes"]


def _normalize_codes(values: str | Iterable[str] | None, what: str) -> frozenset[str]:
    if values is None:
        return frozenset()
    if isinstance(values, str):
        values = [values]
    try:
        return frozenset(str(v).strip().upper() for v in values if str(v).strip())
    except TypeError as err:
        msg = f"{what} must be a string or a list of strings, got {values!r}."
        raise KbfmInputError(msg) from err


@lru_cache(maxsize=16)
def _filtered(
    species: str,
    org_key: tuple[str, int, int],
    go_key: tuple[str, int, int],
    exclude: frozenset[str],
    ontologies: tuple[str, ...],
) -> dict[str, list[GOTerm]]:
    terms, evidence_sets, genes = _load(species, org_key, go_key)
    wanted = [term[2] in ontologies for term in terms]
    kept_codes = [tuple(c for c in codes if c not in exclude) for codes in evidence_sets]
    # Dropping a code can weaken a pair's best evidence; only then is a re-sort needed.
    weakened = [
        bool(kept) and _best_rank(kept) != _best_rank(codes)
        for kept, codes in zip(kept_codes, evidence_sets, strict=True)
    ]
    n_sets = len(evidence_sets)
    objects: dict[int, GOTerm] = {}
    out: dict[str, list[GOTerm]] = {}
    for symbol, flat in genes.items():
        kept: list[GOTerm] = []
        resort = False
        for ti, ei in zip(flat[::2], flat[1::2], strict=True):
            if not wanted[ti] or not kept_codes[ei]:
                continue
            key = ti * n_sets + ei
            term = objects.get(key)
            if term is None:
                go_id, name, ontology, n_genes = terms[ti]
                term = objects[key] = GOTerm(go_id, name, ontology, kept_codes[ei], n_genes)
            resort = resort or weakened[ei]
            kept.append(term)
        if kept:
            if resort:
                kept.sort(key=_term_key)
            out[symbol] = kept
    return out


def go_annotations(
    species: str = "human",
    evidence_exclude: str | Iterable[str] | None = ("IEA", "ND"),
    ontologies: str | Iterable[str] = ("BP", "MF", "CC"),
    path: str | os.PathLike | GODatabases | None = None,
) -> dict[str, list[GOTerm]]:
    """Gene symbol -> its GO terms, most specific and best supported first.

    Terms of a gene are ordered by how few genes of the species carry them (information
    content, counted over the propagated ``go_*_all`` tables, i.e. a term and its
    descendants, with every evidence code), then by their strongest evidence code
    (experimental EXP/IDA/IPI/IMP/IGI/IEP first, see :data:`EVIDENCE_ORDER`), then by id.

    The first call reads the SQLite files (a few seconds for human) and caches every
    annotation as ``<cache_dir>/knowledge/go/<species>-<size>-<mtime>.json.gz``; later
    calls, also in new processes, read that file, and repeated calls in one process are
    served from memory. A corrupted or stale cache file is recomputed.

    Parameters
    ----------
    species
        ``"human"`` or ``"mouse"``.
    evidence_exclude
        Evidence codes to drop (default: electronic ``IEA`` and "no data" ``ND``); a term
        whose only evidence is excluded is left out. ``None`` or ``()`` keeps everything.
    ontologies
        Any of ``"BP"``, ``"MF"``, ``"CC"``.
    path
        Explicit location: a folder (searched like ``$KBFM_GO_DB_DIR``), the
        ``org.*.eg.sqlite`` file itself (``GO.sqlite`` is looked for next to it, in the
        R library it belongs to, then in the default locations) or a
        :class:`GODatabases`. ``None`` searches the default locations.

    Returns
    -------
    ``{symbol: [GOTerm, ...]}`` for the genes with at least one term left after
    filtering; an empty dict (logged) when no databases are found and ``path`` is None.
    The dict is a fresh copy; the :class:`GOTerm` objects are shared and immutable.

    Raises
    ------
    KbfmInputError
        ``path`` is given but missing; a file is not an SQLite database or lacks the
        expected tables; an unknown species or ontology.

    Examples
    --------
    >>> from kbfm.knowledge import go_annotations
    >>> go = go_annotations("human")  # doctest: +SKIP
    >>> [t.term for t in go["CD3E"][:3]]  # doctest: +SKIP
    """
    code_ontologies = _normalize_codes(ontologies, "ontologies")
    unknown = sorted(code_ontologies - set(ONTOLOGY_TABLES))
    if unknown or not code_ontologies:
        msg = f"ontologies must be among {list(ONTOLOGY_TABLES)}, got {ontologies!r}."
        raise KbfmInputError(msg)
    exclude = _normalize_codes(evidence_exclude, "evidence_exclude")
    dbs = _resolve(species, path)
    if dbs is None:
        logger.warning(
            "No Bioconductor GO databases found for %s (searched %s); run `make go-db` or "
            "set $KBFM_GO_DB_DIR.",
            species,
            ", ".join(str(r) for r in _search_roots()),
        )
        return {}
    result = _filtered(
        dbs.species,
        _file_key(Path(dbs.org_db)),
        _file_key(Path(dbs.go_db)),
        exclude,
        tuple(o for o in ONTOLOGY_TABLES if o in code_ontologies),
    )
    return {symbol: list(terms) for symbol, terms in result.items()}


def go_term_definitions(
    go_ids: str | Iterable[str], path: str | os.PathLike | GODatabases | None = None
) -> dict[str, str]:
    """GO id -> its textual definition, from ``GO.sqlite``.

    Parameters
    ----------
    go_ids
        One id or several (``"GO:0042110"``); ids not in the database are left out,
        as are terms without a definition.
    path
        ``GO.sqlite`` itself, a folder holding it (directly, as ``GO.db/extdata/`` or in a
        Debian tree) or a :class:`GODatabases`. ``None`` searches the default locations.

    Returns
    -------
    ``{go_id: definition}``; empty when ``path`` is None and no ``GO.sqlite`` is found.

    Raises
    ------
    KbfmInputError
        ``path`` is given but missing, or the file is not a GO.db SQLite database.
    """
    ids = [go_ids] if isinstance(go_ids, str) else [str(i) for i in go_ids]
    ids = list(dict.fromkeys(i.strip() for i in ids if i and i.strip()))
    go_file = _resolve_go_file(path)
    if go_file is None:
        logger.warning("No %s found; run `make go-db` or set $KBFM_GO_DB_DIR.", _GO_FILE)
        return {}
    if not ids:
        return {}
    con = _open_single(go_file, ["go_term"], "GO.sqlite")
    out: dict[str, str] = {}
    try:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = con.execute(
                f"SELECT go_id, definition FROM go_term WHERE go_id IN ({marks})",
                chunk,
            )
            out.update({gid: d for gid, d in rows if d})
    except sqlite3.DatabaseError as err:
        msg = f"Could not read term definitions from {go_file} ({err})."
        raise KbfmInputError(msg) from err
    finally:
        con.close()
    return {gid: out[gid] for gid in ids if gid in out}


# --------------------------------------------------------------------------- status


def _species_status(dbs: GODatabases) -> dict:
    """Counts and source dates for one species; cheap SQL, not the full load."""
    con = _connect(dbs, ["gene_info", *ONTOLOGY_TABLES.values()])
    try:
        union = " UNION ALL ".join(
            f"SELECT _id, evidence FROM {t}" for t in ONTOLOGY_TABLES.values()
        )
        n_all, n_kept = con.execute(
            f"""SELECT COUNT(DISTINCT gi.symbol),
                       COUNT(DISTINCT CASE WHEN a.evidence NOT IN ('IEA', 'ND')
                                           THEN gi.symbol END)
                FROM ({union}) AS a JOIN gene_info AS gi ON gi._id = a._id"""
        ).fetchone()
        org_meta = _metadata(con, "main")
    finally:
        con.close()
    return {
        "org_db": str(dbs.org_db),
        "organism": org_meta.get("ORGANISM"),
        "n_genes": int(n_all),
        "n_genes_without_iea": int(n_kept),
        "gene_source_date": org_meta.get("GOEGSOURCEDATE") or org_meta.get("EGSOURCEDATE"),
        "go_source_date": org_meta.get("GOSOURCEDATE"),
        "cached": _cache_path(dbs).is_file(),
    }


def go_status() -> dict:
    """What ``kbfm info`` reports about the optional GO databases; never raises.

    Returns
    -------
    A JSON-serializable dict: ``found`` (any species usable), ``searched`` (folders, in
    order), ``go_db`` (path or ``None``), ``go_release`` (``GOSOURCEDATE`` of GO.sqlite),
    ``species_available``, ``species`` (per species: ``org_db``, ``organism``,
    ``n_genes`` with any annotation, ``n_genes_without_iea``, ``gene_source_date``,
    ``go_source_date``, ``cached``) and ``notes`` (why something is missing).
    """
    roots = _search_roots()
    status: dict = {
        "found": False,
        "searched": [str(r) for r in roots],
        "go_db": None,
        "go_release": None,
        "species_available": [],
        "species": {},
        "notes": [],
    }
    env = os.environ.get("KBFM_GO_DB_DIR", "").strip()
    if env and not Path(env).expanduser().is_dir():
        status["notes"].append(f"$KBFM_GO_DB_DIR={env} is not a folder.")
    for species in SPECIES_CODES:
        org_db, go_db = _find_pair(roots, species)
        if go_db is not None and status["go_db"] is None:
            status["go_db"] = str(go_db)
            try:
                con = _open_single(go_db, ["go_term"], "GO.sqlite")
                try:
                    status["go_release"] = _metadata(con).get("GOSOURCEDATE")
                finally:
                    con.close()
            except (KbfmInputError, sqlite3.Error) as err:
                status["notes"].append(str(err))
        if org_db is None:
            status["notes"].append(f"No {_org_names(species)[1]} found ({species}).")
            continue
        if go_db is None:
            status["notes"].append(f"Found {org_db} but no {_GO_FILE}.")
            continue
        dbs = GODatabases(species=species, org_db=org_db, go_db=go_db)
        try:
            status["species"][species] = _species_status(dbs)
        except (KbfmInputError, sqlite3.Error, OSError) as err:
            status["notes"].append(str(err))
            continue
        status["species_available"].append(species)
    status["found"] = bool(status["species_available"])
    if not status["found"]:
        status["notes"].append("Run `make go-db` or set $KBFM_GO_DB_DIR to enable GO terms.")
    return status
