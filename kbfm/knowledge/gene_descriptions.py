"""Gene descriptions from pluggable sources, turned into the text that gets embedded.

Sources: NCBI ``gene_info`` (+ RefSeq summaries), RefSeq summary tables, GenePT-style
JSON, your own TSV/CSV, and ``builtin``: an offline source composed only of facts that
ship with kbfm (the curated marker table joined to Cell Ontology definitions). The
builtin source covers marker genes only and is weak; use NCBI summaries (GenePT's
choice) or LLM-written descriptions for real work.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd

from .._errors import KbfmInputError
from .._settings import settings


class GeneKnowledge:
    """Gene symbol -> description text.

    Parameters
    ----------
    descriptions
        ``{symbol: description}``.
    source
        Name of the source (recorded in provenance).
    version
        Version or release of the source.
    species
        ``"human"`` or ``"mouse"``.
    names
        Optional ``{symbol: full name}``, prepended to the description in :meth:`text`.

    Examples
    --------
    >>> gk = GeneKnowledge({"CD3E": "Part of the T cell receptor complex."}, source="mine")
    >>> gk.text("cd3e")
    'CD3E: Part of the T cell receptor complex.'
    """

    def __init__(
        self,
        descriptions: dict[str, str],
        *,
        source: str,
        version: str = "unversioned",
        species: str = "human",
        names: dict[str, str] | None = None,
    ) -> None:
        self._text = {str(k): str(v) for k, v in descriptions.items() if str(v).strip()}
        self._upper = {k.upper(): k for k in self._text}
        self._names = {str(k): str(v) for k, v in (names or {}).items()}
        self.source = source
        self.version = version
        self.species = species

    def __len__(self) -> int:
        return len(self._text)

    def __contains__(self, symbol: object) -> bool:
        return isinstance(symbol, str) and symbol.upper() in self._upper

    def __iter__(self) -> Iterator[str]:
        return iter(self._text)

    @property
    def symbols(self) -> set[str]:
        """The covered symbols, as written by the source."""
        return set(self._text)

    def get(self, symbol: str) -> str | None:
        """Return the raw description of a symbol (case-insensitive), or None."""
        key = self._upper.get(str(symbol).upper())
        return self._text[key] if key is not None else None

    def text(self, symbol: str) -> str:
        """Return the text to embed: ``"SYMBOL: full name. description"``."""
        key = self._upper.get(str(symbol).upper())
        if key is None:
            msg = f"No description for gene {symbol!r} in source {self.source!r}."
            raise KbfmInputError(msg)
        name = self._names.get(key)
        head = (
            f"{key}: {name}." if name and name.lower() not in self._text[key].lower() else f"{key}:"
        )
        return f"{head} {self._text[key]}"

    def to_frame(self) -> pd.DataFrame:
        """Return ``symbol``, ``full_name``, ``description`` as a DataFrame."""
        return pd.DataFrame(
            {
                "symbol": list(self._text),
                "full_name": [self._names.get(k, "") for k in self._text],
                "description": list(self._text.values()),
            }
        )

    def merge(self, other: GeneKnowledge) -> GeneKnowledge:
        """Return a source with both; this one wins for genes in both."""
        texts = {**other._text, **self._text}
        names = {**other._names, **self._names}
        return GeneKnowledge(
            texts,
            source=f"{self.source}+{other.source}",
            version=f"{self.version}+{other.version}",
            species=self.species,
            names=names,
        )

    @classmethod
    def from_refseq_tsv(cls, path: str | os.PathLike, *, species: str = "human") -> GeneKnowledge:
        """Read a table with ``symbol``, ``full_name`` and ``summary`` columns (gz or plain)."""
        table = _read_table(path, sep="\t")
        _require(table, {"symbol", "summary"}, path)
        table = table.dropna(subset=["symbol", "summary"])
        names = dict(zip(table["symbol"], table.get("full_name", table["symbol"]), strict=True))
        return cls(
            dict(zip(table["symbol"], table["summary"], strict=True)),
            source=f"refseq:{Path(path).name}",
            version=_file_version(path),
            species=species,
            names=names,
        )

    @classmethod
    def from_ncbi(
        cls,
        gene_info_path: str | os.PathLike,
        summaries_path: str | os.PathLike | None = None,
        *,
        species: str = "human",
    ) -> GeneKnowledge:
        """Read NCBI ``gene_info`` (+ an optional ``GeneID``/summary table).

        Without summaries the description is the gene's full name and type, which is
        short; with RefSeq summaries this is GenePT's knowledge source.
        """
        info = _read_table(gene_info_path, sep="\t")
        info.columns = [c.lstrip("#") for c in info.columns]
        _require(info, {"GeneID", "Symbol", "description"}, gene_info_path)
        full = info.get("Full_name_from_nomenclature_authority", info["description"])
        full = full.where(full != "-", info["description"])
        names = dict(zip(info["Symbol"], full, strict=True))
        kind = info.get("type_of_gene", pd.Series("gene", index=info.index))
        texts = {s: f"{n}, a {t} gene." for s, n, t in zip(info["Symbol"], full, kind, strict=True)}
        if summaries_path is not None:
            summ = _read_table(summaries_path, sep="\t")
            id_col = "GeneID" if "GeneID" in summ.columns else "entrez_id"
            _require(summ, {id_col, "summary"}, summaries_path)
            by_id = dict(zip(summ[id_col].astype(str), summ["summary"], strict=True))
            for gid, sym in zip(info["GeneID"].astype(str), info["Symbol"], strict=True):
                if isinstance(by_id.get(gid), str) and by_id[gid].strip():
                    texts[sym] = by_id[gid]
        return cls(
            texts,
            source="ncbi",
            version=_file_version(gene_info_path),
            species=species,
            names=names,
        )

    @classmethod
    def from_genept_json(cls, path: str | os.PathLike, *, species: str = "human") -> GeneKnowledge:
        """Read GenePT-style JSON: ``{symbol: description}``."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            msg = f"Could not read gene descriptions from {path}: {err}"
            raise KbfmInputError(msg) from err
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            msg = f"{path} must hold a JSON object mapping gene symbols to description strings."
            raise KbfmInputError(msg)
        return cls(data, source=f"genept:{path.name}", version=_file_version(path), species=species)

    @classmethod
    def from_table(
        cls,
        path: str | os.PathLike,
        *,
        symbol_col: str = "symbol",
        text_col: str = "description",
        sep: str | None = None,
        species: str = "human",
    ) -> GeneKnowledge:
        """Read your own TSV/CSV with a symbol column and a description column."""
        table = _read_table(path, sep=sep)
        _require(table, {symbol_col, text_col}, path)
        table = table.dropna(subset=[symbol_col, text_col])
        return cls(
            dict(zip(table[symbol_col], table[text_col], strict=True)),
            source=f"table:{Path(path).name}",
            version=_file_version(path),
            species=species,
        )

    @classmethod
    def builtin(cls, species: str = "human") -> GeneKnowledge:
        """Offline knowledge from kbfm's curated marker facts and Cell Ontology definitions."""
        from .cell_ontology import CellOntology
        from .markers import MARKER_TABLE_VERSION, marker_table

        onto = CellOntology.load()
        table = marker_table(species)
        texts = {}
        for gene, rows in table.groupby("gene", sort=True):
            ids = list(dict.fromkeys(rows["cl_id"]))
            labels = [onto.term(i).label for i in ids]
            first = onto.term(ids[0])
            sentence = f"{gene} is a marker gene of {', '.join(labels)}."
            definition = f" {first.label}: {first.definition}" if first.definition else ""
            texts[gene] = sentence + definition
        return cls(
            texts,
            source="builtin",
            version=f"{MARKER_TABLE_VERSION}+CL-{onto.version}",
            species=species,
        )


def _file_version(path: str | os.PathLike) -> str:
    stat = Path(path).stat()
    return f"{Path(path).name}:{stat.st_size}"


def _read_table(path: str | os.PathLike, *, sep: str | None) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        msg = f"Gene knowledge file not found: {path}"
        raise KbfmInputError(msg)
    if sep is None:
        stem = path.name.removesuffix(".gz")
        sep = "," if stem.endswith(".csv") else "\t"
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        return pd.read_csv(fh, sep=sep, dtype=str)


def _require(table: pd.DataFrame, columns: set[str], path) -> None:
    missing = sorted(columns - set(table.columns))
    if missing:
        msg = f"{path} lacks column(s) {missing}; it has {list(table.columns)[:10]}."
        raise KbfmInputError(msg)


def _ncbi_cached(species: str) -> GeneKnowledge:
    folder = settings.cache_dir / "knowledge" / "ncbi" / species
    info = folder / "gene_info.gz"
    if not info.exists():
        msg = (
            f"NCBI gene knowledge for {species} is not downloaded (looked in {folder}). "
            f"Run `kbfm knowledge download ncbi --species {species}` once while online."
        )
        raise KbfmInputError(msg)
    summaries = folder / "summaries.tsv"
    return GeneKnowledge.from_ncbi(info, summaries if summaries.exists() else None, species=species)


GENE_KNOWLEDGE_SOURCES: dict[str, Callable[[str], GeneKnowledge]] = {
    "builtin": GeneKnowledge.builtin,
    "ncbi": _ncbi_cached,
}


def load_gene_knowledge(
    source: str | os.PathLike | GeneKnowledge = "builtin", *, species: str = "human"
) -> GeneKnowledge:
    """Resolve a knowledge source name, path or object.

    Parameters
    ----------
    source
        ``"builtin"``, ``"ncbi"``, a ``.json`` (GenePT) file, a ``.tsv``/``.csv`` (``.gz``)
        file (RefSeq-style when it has ``symbol`` and ``summary`` columns, else
        ``symbol`` + ``description``), or a :class:`GeneKnowledge`.
    species
        ``"human"`` or ``"mouse"``.

    Returns
    -------
    The :class:`GeneKnowledge`.
    """
    if isinstance(source, GeneKnowledge):
        return source
    key = str(source)
    if key in GENE_KNOWLEDGE_SOURCES:
        return GENE_KNOWLEDGE_SOURCES[key](species)
    path = Path(key)
    if path.suffix == ".json":
        return GeneKnowledge.from_genept_json(path, species=species)
    if path.name.removesuffix(".gz").endswith((".tsv", ".csv", ".txt")):
        header = _read_table(path, sep=None).columns
        if {"symbol", "summary"} <= set(header):
            return GeneKnowledge.from_refseq_tsv(path, species=species)
        return GeneKnowledge.from_table(path, species=species)
    msg = (
        f"Unknown gene knowledge source {key!r}; use one of {sorted(GENE_KNOWLEDGE_SOURCES)}, "
        "a GenePT .json file, or a .tsv/.csv table."
    )
    raise KbfmInputError(msg)
