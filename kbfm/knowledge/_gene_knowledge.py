"""The gene-knowledge record: a text per gene symbol, with its source and version.

Kept apart from the source registry (:mod:`kbfm.knowledge.gene_descriptions`) so that
sources built elsewhere (the atlas cards) can return it without importing the registry.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from .._errors import KbfmInputError, closest_names


class GeneKnowledge:
    """Gene symbol -> description text, from one named source.

    Lookups ignore case; symbols keep the spelling of the source.

    Parameters
    ----------
    descriptions
        ``{symbol: description}``; empty descriptions are dropped.
    source
        Name of the source (recorded in provenance).
    version
        Version or release of the source.
    species
        ``"human"`` or ``"mouse"``.
    names
        ``{symbol: full name}``, put before the description by :meth:`text`.

    Examples
    --------
    >>> gk = GeneKnowledge(
    ...     {"CD3E": "Part of the T cell receptor complex."},
    ...     source="mine",
    ...     names={"CD3E": "CD3e molecule"},
    ... )
    >>> gk.text("cd3e")
    'CD3E: CD3e molecule. Part of the T cell receptor complex.'
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
        self._text = {
            str(k): str(v).strip()
            for k, v in descriptions.items()
            if isinstance(v, str) and v.strip() and str(k).strip()
        }
        self._upper: dict[str, str] = {}
        for key in self._text:
            self._upper.setdefault(key.upper(), key)
        self._names = {str(k): str(v) for k, v in (names or {}).items() if isinstance(v, str)}
        self.source = source
        self.version = version
        self.species = species

    def __len__(self) -> int:
        return len(self._text)

    def __contains__(self, symbol: object) -> bool:
        return isinstance(symbol, str) and symbol.upper() in self._upper

    def __iter__(self) -> Iterator[str]:
        return iter(self._text)

    def __repr__(self) -> str:
        return (
            f"GeneKnowledge(source={self.source!r}, version={self.version!r}, "
            f"species={self.species!r}, n_genes={len(self)})"
        )

    @property
    def symbols(self) -> set[str]:
        """The covered symbols, spelled as in the source."""
        return set(self._text)

    def get(self, symbol: str) -> str | None:
        """Return the raw description of a symbol (case-insensitive), or ``None``."""
        key = self._upper.get(str(symbol).upper())
        return None if key is None else self._text[key]

    def text(self, symbol: str) -> str:
        """Return the text to embed for a gene: ``"SYMBOL: full name. description"``.

        The full name is left out when the source has none or the description already
        contains it.

        Raises
        ------
        KbfmInputError
            When the source has no description for ``symbol``.
        """
        key = self._upper.get(str(symbol).upper())
        if key is None:
            msg = (
                f"No description for gene {symbol!r} in gene knowledge {self.source!r} "
                f"({len(self)} genes).{closest_names(str(symbol), self._text)}"
            )
            raise KbfmInputError(msg)
        body = self._text[key]
        name = self._names.get(key, "").strip()
        if name and name != "-" and name.lower() not in body.lower():
            return f"{key}: {name}. {body}"
        return f"{key}: {body}"

    def to_frame(self) -> pd.DataFrame:
        """Return one row per gene: ``symbol``, ``full_name``, ``description``."""
        return pd.DataFrame(
            {
                "symbol": list(self._text),
                "full_name": [self._names.get(k, "") for k in self._text],
                "description": list(self._text.values()),
            }
        )

    def merge(self, other: GeneKnowledge) -> GeneKnowledge:
        """Return a source holding both; this one wins for genes in both.

        Examples
        --------
        >>> a = GeneKnowledge({"CD4": "from a"}, source="a")
        >>> b = GeneKnowledge({"CD4": "from b", "CD8A": "from b"}, source="b")
        >>> merged = a.merge(b)
        >>> merged.get("CD4"), len(merged), merged.source
        ('from a', 2, 'a+b')
        """
        if other.species != self.species:
            msg = f"Cannot merge {other.species} gene knowledge into {self.species} knowledge."
            raise KbfmInputError(msg)
        mine = {k.upper() for k in self._text}
        texts = {k: v for k, v in other._text.items() if k.upper() not in mine}
        names = {k: v for k, v in other._names.items() if k.upper() not in mine}
        return GeneKnowledge(
            {**texts, **self._text},
            source=f"{self.source}+{other.source}",
            version=f"{self.version}+{other.version}",
            species=self.species,
            names={**names, **self._names},
        )

    @classmethod
    def from_refseq_tsv(cls, path: str | os.PathLike, *, species: str = "human") -> GeneKnowledge:
        """Read a RefSeq summary table: ``symbol``, ``summary`` and optional ``full_name``.

        Parameters
        ----------
        path
            Tab-separated (comma-separated when the name ends in ``.csv``), plain or
            ``.gz`` (e.g. ``refseq_summaries_human.tsv.gz`` with ``entrez_id``,
            ``symbol``, ``full_name``, ``summary``).
        species
            Species of the genes.

        Returns
        -------
        The :class:`GeneKnowledge`.
        """
        table = _read_table(path, sep=None)  # tab, or comma for .csv
        _require(table, ["symbol", "summary"], path)
        table = table.dropna(subset=["symbol", "summary"])
        full = table["full_name"] if "full_name" in table.columns else None
        return cls(
            dict(zip(table["symbol"], table["summary"], strict=True)),
            source=f"refseq:{Path(path).name}",
            version=_file_version(path),
            species=species,
            names=dict(zip(table["symbol"], full, strict=True)) if full is not None else None,
        )

    @classmethod
    def from_ncbi(
        cls,
        gene_info_path: str | os.PathLike,
        summaries_path: str | os.PathLike | None = None,
        *,
        species: str = "human",
        version: str | None = None,
    ) -> GeneKnowledge:
        """Read NCBI ``gene_info``, optionally joined by GeneID to gene summaries.

        Without summaries a gene's description is only its full name and type, which is
        short; with RefSeq summaries this is GenePT's knowledge source.

        Parameters
        ----------
        gene_info_path
            NCBI ``gene_info`` (``.gz`` or plain; header starts with ``#tax_id``). Names
            come from ``Full_name_from_nomenclature_authority``, else ``description``.
        summaries_path
            Tab-separated table with a ``GeneID`` (or ``entrez_id``) and a ``summary``
            column, such as the ``summaries.tsv`` written by
            :func:`~kbfm.knowledge.ncbi_download.download_ncbi`.
        species
            Species of the genes.
        version
            Version to record (default: file name and size).

        Returns
        -------
        The :class:`GeneKnowledge`.
        """
        info = _read_table(gene_info_path, sep="\t")
        info.columns = [c.lstrip("#") for c in info.columns]
        _require(info, ["GeneID", "Symbol", "description"], gene_info_path)
        info = info.dropna(subset=["GeneID", "Symbol"])
        # A few symbols name several GeneIDs; keep the nomenclature authority's gene.
        authority = info.get("Symbol_from_nomenclature_authority", info["Symbol"])
        info = info.assign(_official=authority != info["Symbol"])
        info = info.sort_values("_official", kind="stable").drop_duplicates("Symbol")
        full = info.get("Full_name_from_nomenclature_authority", info["description"])
        full = full.where(full.notna() & (full != "-"), info["description"])
        kind = info.get("type_of_gene", pd.Series("", index=info.index)).fillna("")
        texts = {
            symbol: (f"{name}, a {gene_type} gene." if gene_type else f"{name}.")
            for symbol, name, gene_type in zip(info["Symbol"], full, kind, strict=True)
        }
        if summaries_path is not None:
            summaries = _read_table(summaries_path, sep="\t")
            id_col = "GeneID" if "GeneID" in summaries.columns else "entrez_id"
            _require(summaries, [id_col, "summary"], summaries_path)
            by_id = dict(zip(summaries[id_col].astype(str), summaries["summary"], strict=True))
            for gene_id, symbol in zip(info["GeneID"].astype(str), info["Symbol"], strict=True):
                summary = by_id.get(gene_id)
                if isinstance(summary, str) and summary.strip():
                    texts[symbol] = summary
        return cls(
            texts,
            source="ncbi",
            version=version or _file_version(gene_info_path),
            species=species,
            names=dict(zip(info["Symbol"], full, strict=True)),
        )

    @classmethod
    def from_genept_json(cls, path: str | os.PathLike, *, species: str = "human") -> GeneKnowledge:
        """Read GenePT-style JSON: ``{symbol: description}``.

        Parameters
        ----------
        path
            The JSON file (plain or ``.gz``).
        species
            Species of the genes.

        Returns
        -------
        The :class:`GeneKnowledge`.
        """
        path = Path(path)
        try:
            raw = path.read_bytes()
            data = json.loads(gzip.decompress(raw) if path.suffix == ".gz" else raw)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            msg = f"Could not read gene descriptions from {path}: {err}"
            raise KbfmInputError(msg) from err
        if not isinstance(data, dict):
            msg = f"{path} must hold a JSON object mapping gene symbols to description strings."
            raise KbfmInputError(msg)
        bad = [k for k, v in data.items() if not isinstance(v, str)]
        if bad:
            msg = (
                f"{path} must hold a JSON object mapping gene symbols to description "
                f"strings; {len(bad)} values are not strings, e.g. for {bad[0]!r}."
            )
            raise KbfmInputError(msg)
        return cls(data, source=f"genept:{path.name}", version=_file_version(path), species=species)

    @classmethod
    def from_table(
        cls,
        path: str | os.PathLike,
        symbol_col: str = "symbol",
        text_col: str = "description",
        sep: str | None = None,
        *,
        species: str = "human",
    ) -> GeneKnowledge:
        """Read your own table with a symbol column and a description column.

        Parameters
        ----------
        path
            TSV or CSV, plain or ``.gz``.
        symbol_col, text_col
            Column names.
        sep
            Field separator (default: ``","`` for ``.csv``, else tab).
        species
            Species of the genes.

        Returns
        -------
        The :class:`GeneKnowledge`.
        """
        table = _read_table(path, sep=sep)
        _require(table, [symbol_col, text_col], path)
        table = table.dropna(subset=[symbol_col, text_col])
        return cls(
            dict(zip(table[symbol_col], table[text_col], strict=True)),
            source=f"table:{Path(path).name}",
            version=_file_version(path),
            species=species,
        )

    @classmethod
    def builtin(cls, species: str = "human") -> GeneKnowledge:
        """Offline knowledge composed from kbfm's marker table and CL definitions.

        Each curated marker gene gets a text like ``"CD3E is a marker gene of T cell
        (CL:0000084). T cell: <CL definition>. Also marks <other cell types>."``, the
        first cell type being the most general one it marks. Only marker genes are
        covered (a few hundred), and the texts hold no gene function: a weak source,
        meant for trying kbfm offline.

        Parameters
        ----------
        species
            ``"human"``, or ``"mouse"`` (markers translated by orthology).

        Returns
        -------
        The :class:`GeneKnowledge`; its version joins the marker-table and CL versions.

        Examples
        --------
        >>> GeneKnowledge.builtin().text("MS4A1").startswith("MS4A1: MS4A1 is a marker gene")
        True
        """
        from .cell_ontology import CellOntology
        from .markers import MARKER_TABLE_VERSION, marker_table

        onto = CellOntology.load()
        table = marker_table(species)
        marks: dict[str, list[str]] = {}
        for gene, cid in zip(table["gene"], table["cl_id"], strict=True):
            ids = marks.setdefault(gene, [])
            if cid not in ids:
                ids.append(cid)
        texts = {}
        for gene, ids in marks.items():
            terms = sorted((onto.term(i) for i in ids), key=lambda t: len(t.ancestors))
            first, others = terms[0], terms[1:]
            text = f"{gene} is a marker gene of {first.label} ({first.id})."
            if first.definition:
                text += f" {first.label}: {first.definition.strip().rstrip('.')}."
            if others:
                text += " Also marks " + ", ".join(f"{t.label} ({t.id})" for t in others) + "."
            texts[gene] = text
        return cls(
            texts,
            source="builtin",
            version=f"{MARKER_TABLE_VERSION}+CL-{onto.version}",
            species=species,
        )


def _file_version(path: str | os.PathLike) -> str:
    return f"{Path(path).name}:{Path(path).stat().st_size}"


def _read_table(path: str | os.PathLike, *, sep: str | None) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        msg = f"Gene knowledge file not found: {path}"
        raise KbfmInputError(msg)
    if sep is None:
        sep = "," if path.name.removesuffix(".gz").endswith(".csv") else "\t"
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt") as fh:
            return pd.read_csv(fh, sep=sep, dtype=str)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as err:
        msg = f"Could not read {path} as a table separated by {sep!r}: {err}"
        raise KbfmInputError(msg) from err


def _require(table: pd.DataFrame, columns: list[str], path: str | os.PathLike) -> None:
    missing = sorted(set(columns) - set(table.columns))
    if missing:
        msg = f"{path} lacks column(s) {missing}; it has {list(table.columns)[:10]}."
        raise KbfmInputError(msg)
