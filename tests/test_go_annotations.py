"""GO annotations from Bioconductor SQLite files (kbfm.knowledge.go_annotations).

Two kinds of fixture databases, both with the Bioconductor schema:

* a synthetic one built from scratch here (always runs), with a hand-made term hierarchy
  so that the ordering, filtering and caching can be checked exactly;
* a slice of the real Debian packages (GFAP, CD3E, MS4A1, ALB and their GO rows), copied
  from ``org.Hs.eg.sqlite`` / ``GO.sqlite`` when those are installed (``make go-db``);
  skipped otherwise.
"""

from __future__ import annotations

import gzip
import importlib
import json
import os
import sqlite3
from pathlib import Path

import pytest

import kbfm
from kbfm._errors import KbfmInputError
from kbfm.knowledge import (
    GODatabases,
    GOTerm,
    find_go_databases,
    go_annotations,
    go_status,
    go_term_definitions,
)

# The function kbfm.knowledge.go_annotations shadows the submodule of the same name.
goa = importlib.import_module("kbfm.knowledge.go_annotations")

# Looked up at import, before the autouse fixture points the kbfm cache at a temp folder.
REAL = find_go_databases("human")
needs_real = pytest.mark.skipif(
    REAL is None,
    reason="Debian's Bioconductor SQLite files (org.Hs.eg.sqlite, GO.sqlite) are not "
    "installed; run `make go-db` or set KBFM_GO_DB_DIR",
)
SLICE_GENES = ("GFAP", "CD3E", "MS4A1", "ALB")

# --------------------------------------------------------------------------- fixtures

ORG_DDL = """
CREATE TABLE metadata (name VARCHAR(80) PRIMARY KEY, value VARCHAR(255));
CREATE TABLE genes (_id INTEGER PRIMARY KEY, gene_id VARCHAR(10) NOT NULL UNIQUE);
CREATE TABLE gene_info (_id INTEGER NOT NULL UNIQUE, gene_name VARCHAR(255) NOT NULL,
                        symbol VARCHAR(80) NOT NULL);
"""
GO_DDL = """
CREATE TABLE metadata (name VARCHAR(80) PRIMARY KEY, value VARCHAR(255));
CREATE TABLE go_ontology (ontology VARCHAR(9) PRIMARY KEY,
                          term_type VARCHAR(18) NOT NULL UNIQUE);
CREATE TABLE go_term (_id INTEGER PRIMARY KEY, go_id CHAR(10) NOT NULL UNIQUE,
                      term VARCHAR(255) NOT NULL, ontology VARCHAR(9) NOT NULL,
                      definition TEXT NULL);
"""
ANNOT_DDL = (
    "CREATE TABLE {t} (_id INTEGER NOT NULL, go_id CHAR(10) NOT NULL, evidence CHAR(3) NOT NULL)"
)

# Synthetic hierarchy (BP): GENERIC <- MID <- SPECIFIC. SPECIFIC is carried by AAA only,
# MID (with descendants) by AAA/BBB/CCC, GENERIC by all four genes. Directly, GENERIC is
# annotated to AAA and DDD only, so direct counts would wrongly call it more specific
# than MID; the propagated go_bp_all table gets it right.
GENERIC, MID, SPECIFIC = "GO:0000001", "GO:0000002", "GO:0000003"
BINDING, COMPARTMENT = "GO:0000010", "GO:0000020"
TERMS = {
    GENERIC: ("generic process", "BP", "Any process at all."),
    MID: ("mid-level process", "BP", "A process of middling scope."),
    SPECIFIC: ("very specific process", "BP", "A process only AAA takes part in."),
    BINDING: ("some binding", "MF", "Binding to something."),
    COMPARTMENT: ("unique compartment", "CC", None),
}
GENES = {1: ("AAA", "alpha gene"), 2: ("BBB", "beta gene"), 3: ("CCC", "gamma"), 4: ("DDD", "d")}
DIRECT = {
    "go_bp": [
        (1, SPECIFIC, "IDA"),
        (1, SPECIFIC, "IEA"),
        (1, MID, "TAS"),
        (1, GENERIC, "IBA"),
        (2, MID, "IMP"),
        (3, MID, "IEA"),
        (4, GENERIC, "ND"),
    ],
    "go_mf": [(1, BINDING, "IEA"), (1, BINDING, "IPI"), (2, BINDING, "IDA")],
    "go_cc": [(1, COMPARTMENT, "TAS")],
}
PROPAGATED = {
    "go_bp_all": [(g, SPECIFIC, "IDA") for g in (1,)]
    + [(g, MID, "IMP") for g in (1, 2, 3)]
    + [(g, GENERIC, "IBA") for g in (1, 2, 3, 4)],
    "go_mf_all": [(1, BINDING, "IPI"), (2, BINDING, "IDA")],
    "go_cc_all": [(1, COMPARTMENT, "TAS")],
}


def build_synthetic(folder: Path, species_code: str = "Hs", propagated: bool = True) -> Path:
    """Write ``org.<code>.eg.sqlite`` and ``GO.sqlite`` from scratch into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    org = sqlite3.connect(folder / f"org.{species_code}.eg.sqlite")
    org.executescript(ORG_DDL)
    for table in [*DIRECT, *(PROPAGATED if propagated else [])]:
        org.execute(ANNOT_DDL.format(t=table))
    org.executemany("INSERT INTO metadata VALUES (?, ?)", [("EGSOURCEDATE", "2024-Jan01")])
    for _id, (symbol, name) in GENES.items():
        org.execute("INSERT INTO genes VALUES (?, ?)", (_id, str(1000 + _id)))
        org.execute("INSERT INTO gene_info VALUES (?, ?, ?)", (_id, name, symbol))
    for table, rows in [*DIRECT.items(), *(PROPAGATED.items() if propagated else [])]:
        org.executemany(f"INSERT INTO {table} VALUES (?, ?, ?)", rows)
    org.commit()
    org.close()
    go = sqlite3.connect(folder / "GO.sqlite")
    go.executescript(GO_DDL)
    go.executemany(
        "INSERT INTO metadata VALUES (?, ?)",
        [("GOSOURCEDATE", "2024-01-17"), ("GOSOURCENAME", "Gene Ontology")],
    )
    go.executemany(
        "INSERT INTO go_term (go_id, term, ontology, definition) VALUES (?, ?, ?, ?)",
        [(gid, *values) for gid, values in TERMS.items()],
    )
    go.commit()
    go.close()
    return folder


def build_real_slice(folder: Path, genes: tuple[str, ...] = SLICE_GENES) -> Path:
    """Copy ``genes`` and their GO rows from the real databases into tiny ones."""
    assert REAL is not None
    folder.mkdir(parents=True, exist_ok=True)
    dst_org, dst_go = folder / REAL.org_db.name, folder / "GO.sqlite"
    con = sqlite3.connect(dst_org)
    con.execute("ATTACH DATABASE ? AS src", (f"file:{REAL.org_db}?mode=ro",))
    con.execute("ATTACH DATABASE ? AS srcgo", (f"file:{REAL.go_db}?mode=ro",))
    tables = ["metadata", "genes", "gene_info"]
    annot = [f"go_{o}{s}" for o in ("bp", "mf", "cc") for s in ("", "_all")]
    for table in tables + annot:
        (ddl,) = con.execute(
            "SELECT sql FROM src.sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        con.execute(ddl)
    marks = ",".join("?" * len(genes))
    ids = f"SELECT _id FROM src.gene_info WHERE symbol IN ({marks})"
    con.execute("INSERT INTO metadata SELECT * FROM src.metadata")
    con.execute(f"INSERT INTO genes SELECT * FROM src.genes WHERE _id IN ({ids})", genes)
    con.execute(f"INSERT INTO gene_info SELECT * FROM src.gene_info WHERE _id IN ({ids})", genes)
    for table in annot:
        con.execute(f"INSERT INTO {table} SELECT * FROM src.{table} WHERE _id IN ({ids})", genes)
    con.commit()
    used = {g for t in annot for (g,) in con.execute(f"SELECT DISTINCT go_id FROM {t}")}
    con.close()
    go = sqlite3.connect(dst_go)
    go.execute("ATTACH DATABASE ? AS src", (f"file:{REAL.go_db}?mode=ro",))
    for table in ("metadata", "go_ontology", "go_term"):
        (ddl,) = go.execute(
            "SELECT sql FROM src.sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        go.execute(ddl)
        if table != "go_term":
            go.execute(f"INSERT INTO {table} SELECT * FROM src.{table}")
    used_ids = sorted(used)
    for start in range(0, len(used_ids), 500):
        chunk = used_ids[start : start + 500]
        go.execute(
            f"INSERT INTO go_term SELECT * FROM src.go_term WHERE go_id IN "
            f"({','.join('?' * len(chunk))})",
            chunk,
        )
    go.commit()
    go.close()
    return folder


def clear_memory_caches() -> None:
    goa._load.cache_clear()
    goa._filtered.cache_clear()


@pytest.fixture(autouse=True)
def no_system_databases(monkeypatch):
    """Only the folders a test sets up are searched; no in-process results carry over."""
    monkeypatch.setattr(goa, "SYSTEM_R_LIBRARIES", ())
    monkeypatch.delenv("KBFM_GO_DB_DIR", raising=False)
    clear_memory_caches()
    yield
    clear_memory_caches()


@pytest.fixture
def synthetic(tmp_path) -> Path:
    return build_synthetic(tmp_path / "synthetic")


@pytest.fixture(scope="module")
def real_slice(tmp_path_factory) -> Path:
    if REAL is None:
        pytest.skip(needs_real.kwargs["reason"])
    return build_real_slice(tmp_path_factory.mktemp("go-slice"))


def best_rank(term: GOTerm) -> int:
    return min(goa._EVIDENCE_RANK.get(c, 99) for c in term.evidence)


# --------------------------------------------------------------------------- synthetic


def test_synthetic_terms_names_evidence_and_order(synthetic):
    go = go_annotations(path=synthetic)
    # CCC has only IEA and DDD only ND: both dropped by the default filter.
    assert set(go) == {"AAA", "BBB"}
    aaa = go["AAA"]
    # n_genes from the propagated tables: SPECIFIC 1, COMPARTMENT 1, BINDING 2, MID 3,
    # GENERIC 4; ties broken by evidence (IDA before TAS).
    assert [t.go_id for t in aaa] == [SPECIFIC, COMPARTMENT, BINDING, MID, GENERIC]
    assert [t.n_genes for t in aaa] == [1, 1, 2, 3, 4]
    first = aaa[0]
    assert first == GOTerm(SPECIFIC, "very specific process", "BP", ("IDA",), 1)
    assert first.experimental
    assert not aaa[1].experimental  # TAS only
    assert {t.ontology for t in aaa} == {"BP", "MF", "CC"}
    binding = next(t for t in aaa if t.go_id == BINDING)
    assert binding.evidence == ("IPI",)  # IEA removed, IPI kept
    assert [(t.go_id, t.evidence) for t in go["BBB"]] == [(BINDING, ("IDA",)), (MID, ("IMP",))]


def test_synthetic_iea_filtering(synthetic):
    everything = go_annotations(path=synthetic, evidence_exclude=None)
    assert set(everything) == {"AAA", "BBB", "CCC", "DDD"}
    assert everything["CCC"] == [GOTerm(MID, "mid-level process", "BP", ("IEA",), 3)]
    assert everything["DDD"][0].evidence == ("ND",)
    # All evidence codes of a pair are kept, strongest first.
    specific = everything["AAA"][0]
    assert specific.go_id == SPECIFIC
    assert specific.evidence == ("IDA", "IEA")
    assert go_annotations(path=synthetic, evidence_exclude=()) == everything
    only_iea_out = go_annotations(path=synthetic, evidence_exclude="iea")
    assert "CCC" not in only_iea_out
    assert only_iea_out["DDD"][0].evidence == ("ND",)


def test_synthetic_resorts_when_best_evidence_is_excluded(synthetic):
    # Without IDA, SPECIFIC is left with IEA and falls behind COMPARTMENT (TAS), which
    # carries as few genes.
    go = go_annotations(path=synthetic, evidence_exclude=("IDA",))
    assert [t.go_id for t in go["AAA"][:2]] == [COMPARTMENT, SPECIFIC]
    assert go["AAA"][1].evidence == ("IEA",)


def test_synthetic_ontology_selection(synthetic):
    mf = go_annotations(path=synthetic, ontologies="MF")
    assert {t.ontology for terms in mf.values() for t in terms} == {"MF"}
    assert set(mf) == {"AAA", "BBB"}
    cc_bp = go_annotations(path=synthetic, ontologies=["cc", "BP"])
    assert {t.ontology for terms in cc_bp.values() for t in terms} == {"BP", "CC"}
    with pytest.raises(KbfmInputError, match="ontologies"):
        go_annotations(path=synthetic, ontologies=("BP", "XX"))


def test_direct_counts_without_propagated_tables(tmp_path):
    folder = build_synthetic(tmp_path / "flat", propagated=False)
    go = go_annotations(path=folder, evidence_exclude=None)
    counts = {t.go_id: t.n_genes for t in go["AAA"]}
    assert counts[GENERIC] == 2  # AAA and DDD directly
    assert counts[MID] == 3


def test_result_is_a_copy(synthetic):
    first = go_annotations(path=synthetic)
    first["AAA"].clear()
    first.pop("BBB")
    again = go_annotations(path=synthetic)
    assert len(again["AAA"]) == 5
    assert "BBB" in again


def test_path_forms(synthetic, tmp_path):
    from_dir = go_annotations(path=synthetic)
    from_file = go_annotations(path=synthetic / "org.Hs.eg.sqlite")
    dbs = GODatabases("human", synthetic / "org.Hs.eg.sqlite", synthetic / "GO.sqlite")
    assert from_dir == from_file == go_annotations(path=dbs)
    # An R library layout: <lib>/org.Hs.eg.db/extdata/... with <lib>/GO.db/extdata/GO.sqlite.
    lib = tmp_path / "rlib"
    for pkg, name in (("org.Hs.eg.db", "org.Hs.eg.sqlite"), ("GO.db", "GO.sqlite")):
        (lib / pkg / "extdata").mkdir(parents=True)
        (lib / pkg / "extdata" / name).write_bytes((synthetic / name).read_bytes())
    in_lib = go_annotations(path=lib / "org.Hs.eg.db" / "extdata" / "org.Hs.eg.sqlite")
    assert in_lib == from_dir


def test_term_definitions(synthetic):
    defs = go_term_definitions([SPECIFIC, "GO:9999999", COMPARTMENT, MID], path=synthetic)
    # Unknown ids and terms without a definition are left out; input order is kept.
    assert defs == {SPECIFIC: TERMS[SPECIFIC][2], MID: TERMS[MID][2]}
    assert list(defs) == [SPECIFIC, MID]
    assert go_term_definitions(GENERIC, path=synthetic / "GO.sqlite") == {
        GENERIC: "Any process at all."
    }
    assert go_term_definitions([], path=synthetic) == {}


# --------------------------------------------------------------------------- caching


def cache_files() -> list[Path]:
    folder = Path(kbfm.settings.cache_dir) / "knowledge" / "go"
    return sorted(folder.glob("*.json.gz")) if folder.exists() else []


def test_cache_file_written_and_reused(synthetic, monkeypatch):
    org = synthetic / "org.Hs.eg.sqlite"
    first = go_annotations(path=synthetic)
    st = org.stat()
    (cache,) = cache_files()
    assert cache.name == f"human-{st.st_size}-{int(st.st_mtime)}.json.gz"
    payload = json.loads(gzip.decompress(cache.read_bytes()))
    assert payload["species"] == "human"
    assert "AAA" in payload["genes"]

    # Same process: served from memory, the file is not read again.
    def fail(*args, **kwargs):
        raise AssertionError("should not be called")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(goa, "_read_cache", fail)
        patch.setattr(goa, "_read_databases", fail)
        assert go_annotations(path=synthetic) == first

    # "New process": memory cleared, the SQLite files are not read, the cache file is.
    clear_memory_caches()
    monkeypatch.setattr(goa, "_read_databases", fail)
    assert go_annotations(path=synthetic) == first
    assert go_annotations(path=synthetic, evidence_exclude=None)["CCC"][0].go_id == MID


@pytest.mark.parametrize(
    "damage",
    [
        b"this is not gzip",
        gzip.compress(b'{"format": 2, "genes": '),  # truncated JSON
        gzip.compress(b"[1, 2, 3]"),  # valid JSON, wrong shape
        "bad-index",
        "bad-term",
    ],
)
def test_corrupted_cache_is_recomputed(synthetic, damage):
    expected = go_annotations(path=synthetic)
    (cache,) = cache_files()
    if damage == "bad-index":
        payload = json.loads(gzip.decompress(cache.read_bytes()))
        payload["genes"]["AAA"][0] = 10_000
        damage = gzip.compress(json.dumps(payload).encode())
    elif damage == "bad-term":
        payload = json.loads(gzip.decompress(cache.read_bytes()))
        payload["terms"][0] = ["GO:1"]
        damage = gzip.compress(json.dumps(payload).encode())
    cache.write_bytes(damage)
    clear_memory_caches()
    assert go_annotations(path=synthetic) == expected
    # ...and the file was rewritten with a valid payload.
    payload = json.loads(gzip.decompress(cache.read_bytes()))
    assert payload["format"] == goa._CACHE_FORMAT
    assert len(payload["terms"]) == len(TERMS)


def test_changed_database_is_read_again(synthetic):
    org = synthetic / "org.Hs.eg.sqlite"
    assert "EEE" not in go_annotations(path=synthetic)
    con = sqlite3.connect(org)
    con.execute("INSERT INTO genes VALUES (5, '1005')")
    con.execute("INSERT INTO gene_info VALUES (5, 'e gene', 'EEE')")
    con.execute(f"INSERT INTO go_cc VALUES (5, '{COMPARTMENT}', 'IDA')")
    con.commit()
    con.close()
    st = org.stat()
    os.utime(org, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    go = go_annotations(path=synthetic)  # no cache clearing: the key includes the mtime
    assert [t.go_id for t in go["EEE"]] == [COMPARTMENT]
    assert len(cache_files()) == 2


# --------------------------------------------------------------------------- errors


def test_missing_explicit_path(tmp_path):
    missing = tmp_path / "nowhere" / "org.Hs.eg.sqlite"
    with pytest.raises(KbfmInputError, match="not found") as info:
        go_annotations(path=missing)
    assert str(missing) in str(info.value)
    with pytest.raises(KbfmInputError, match=str(tmp_path / "nope")):
        go_term_definitions(["GO:0000001"], path=tmp_path / "nope")
    with pytest.raises(KbfmInputError, match=r"No org\.Hs\.eg\.sqlite under"):
        go_annotations(path=tmp_path)  # exists, but holds no database


def test_not_an_sqlite_file(synthetic):
    org = synthetic / "org.Hs.eg.sqlite"
    org.write_text("gene\tgo_id\nGFAP\tGO:0005882\n" * 100)
    with pytest.raises(KbfmInputError, match="not a valid SQLite database") as info:
        go_annotations(path=synthetic)
    assert str(org) in str(info.value)


def test_sqlite_file_without_expected_tables(synthetic):
    org = synthetic / "org.Hs.eg.sqlite"
    con = sqlite3.connect(org)
    con.execute("DROP TABLE go_mf")
    con.commit()
    con.close()
    with pytest.raises(KbfmInputError, match=r"lacks table\(s\) \['go_mf'\]") as info:
        go_annotations(path=synthetic)
    assert str(org) in str(info.value)

    go_file = synthetic / "GO.sqlite"
    go_file.unlink()
    sqlite3.connect(go_file).execute("CREATE TABLE unrelated (x)").connection.close()
    with pytest.raises(KbfmInputError, match=r"GO\.sqlite lacks table\(s\) \['go_term'\]"):
        go_term_definitions(["GO:0000001"], path=go_file)


def test_unknown_species(synthetic):
    with pytest.raises(KbfmInputError, match="mouse"):
        go_annotations("mosue", path=synthetic)


# --------------------------------------------------------------------------- locating


def test_find_via_env_folder_layouts(tmp_path, monkeypatch):
    assert find_go_databases("human") is None
    flat = build_synthetic(tmp_path / "flat")
    monkeypatch.setenv("KBFM_GO_DB_DIR", str(flat))
    found = find_go_databases("human")
    assert found == GODatabases("human", flat / "org.Hs.eg.sqlite", flat / "GO.sqlite")
    assert find_go_databases("mouse") is None

    # A Debian-extracted tree, as `make go-db` leaves it.
    tree = tmp_path / "debian"
    lib = tree / "usr" / "lib" / "R" / "site-library"
    for pkg in ("org.Mm.eg.db", "GO.db"):
        (lib / pkg / "extdata").mkdir(parents=True)
    build_synthetic(lib / "org.Mm.eg.db" / "extdata", species_code="Mm")
    (lib / "org.Mm.eg.db" / "extdata" / "GO.sqlite").rename(lib / "GO.db" / "extdata" / "GO.sqlite")
    monkeypatch.setenv("KBFM_GO_DB_DIR", str(tree))
    mouse = find_go_databases("mouse")
    assert mouse is not None
    assert mouse.org_db == lib / "org.Mm.eg.db" / "extdata" / "org.Mm.eg.sqlite"
    assert mouse.go_db == lib / "GO.db" / "extdata" / "GO.sqlite"
    assert go_annotations("mouse")["AAA"][0].go_id == SPECIFIC


def test_env_folder_takes_precedence_over_cache(tmp_path, monkeypatch):
    cached = build_synthetic(Path(kbfm.settings.cache_dir) / "knowledge" / "debian")
    assert find_go_databases().org_db == cached / "org.Hs.eg.sqlite"
    env = build_synthetic(tmp_path / "env")
    monkeypatch.setenv("KBFM_GO_DB_DIR", str(env))
    assert find_go_databases().org_db == env / "org.Hs.eg.sqlite"
    # A KBFM_GO_DB_DIR that does not exist is skipped, not an error.
    monkeypatch.setenv("KBFM_GO_DB_DIR", str(tmp_path / "missing"))
    assert find_go_databases().org_db == cached / "org.Hs.eg.sqlite"


def test_system_r_library_is_searched(tmp_path, monkeypatch):
    lib = tmp_path / "site-library"
    build_synthetic(lib / "org.Hs.eg.db" / "extdata")
    (lib / "GO.db" / "extdata").mkdir(parents=True)
    (lib / "org.Hs.eg.db" / "extdata" / "GO.sqlite").rename(lib / "GO.db" / "extdata" / "GO.sqlite")
    monkeypatch.setattr(goa, "SYSTEM_R_LIBRARIES", (tmp_path / "absent", lib))
    found = find_go_databases()
    assert found is not None
    assert found.go_db == lib / "GO.db" / "extdata" / "GO.sqlite"


def test_absent_databases(tmp_path, monkeypatch, caplog):
    assert find_go_databases("human") is None
    assert find_go_databases("mouse") is None
    with caplog.at_level("WARNING", logger="kbfm.knowledge.go_annotations"):
        assert go_annotations() == {}
    assert "make go-db" in caplog.text
    assert go_term_definitions(["GO:0000001"]) == {}
    monkeypatch.setenv("KBFM_GO_DB_DIR", str(tmp_path / "missing"))
    status = go_status()
    json.dumps(status)  # serializable for `kbfm info --json`
    assert status["found"] is False
    assert status["species_available"] == []
    assert status["species"] == {}
    assert status["go_db"] is None
    assert status["go_release"] is None
    assert status["searched"][0] == str(tmp_path / "missing")
    notes = " ".join(status["notes"])
    assert "KBFM_GO_DB_DIR" in notes
    assert "org.Hs.eg.sqlite" in notes
    assert "make go-db" in notes


def test_status_when_present(synthetic, monkeypatch):
    monkeypatch.setenv("KBFM_GO_DB_DIR", str(synthetic))
    status = go_status()
    json.dumps(status)
    assert status["found"] is True
    assert status["species_available"] == ["human"]
    assert status["go_db"] == str(synthetic / "GO.sqlite")
    assert status["go_release"] == "2024-01-17"
    human = status["species"]["human"]
    assert human["n_genes"] == 4
    assert human["n_genes_without_iea"] == 2  # CCC: IEA only, DDD: ND only
    assert human["gene_source_date"] == "2024-Jan01"
    assert human["cached"] is False
    go_annotations()
    assert go_status()["species"]["human"]["cached"] is True


def test_status_reports_a_broken_file_without_raising(synthetic, monkeypatch):
    (synthetic / "org.Hs.eg.sqlite").write_bytes(b"\x00" * 4096)
    monkeypatch.setenv("KBFM_GO_DB_DIR", str(synthetic))
    status = go_status()
    assert status["found"] is False
    assert any("org.Hs.eg.sqlite" in note for note in status["notes"])


# --------------------------------------------------------------------------- real slice


def slice_rows(folder: Path, symbol: str, table: str) -> set[tuple[str, str]]:
    con = sqlite3.connect(folder / "org.Hs.eg.sqlite")
    rows = con.execute(
        f"SELECT a.go_id, a.evidence FROM {table} a JOIN gene_info g ON g._id = a._id "
        "WHERE g.symbol = ?",
        (symbol,),
    ).fetchall()
    con.close()
    return set(rows)


@needs_real
def test_real_slice_terms_and_evidence(real_slice):
    go = go_annotations(path=real_slice)
    assert set(go) == set(SLICE_GENES)
    gfap = {t.term: t for t in go["GFAP"]}
    assert gfap["intermediate filament organization"].ontology == "BP"
    assert "IDA" in gfap["intermediate filament organization"].evidence
    assert gfap["intermediate filament cytoskeleton"].ontology == "CC"
    cd3e = {t.term: t for t in go["CD3E"]}
    assert cd3e["T cell receptor complex"].evidence[0] == "IDA"
    assert cd3e["T cell receptor complex"].experimental
    assert cd3e["alpha-beta T cell receptor complex"].ontology == "CC"
    assert "extracellular space" in {t.term for t in go["ALB"]}
    assert "plasma membrane" in {t.term for t in go["MS4A1"]}
    # Every (term, code) pair matches the source rows, minus IEA/ND.
    for symbol in SLICE_GENES:
        expected = set()
        for table in ("go_bp", "go_mf", "go_cc"):
            expected |= {
                r for r in slice_rows(real_slice, symbol, table) if r[1] not in {"IEA", "ND"}
            }
        got = {(t.go_id, code) for t in go[symbol] for code in t.evidence}
        assert got == expected, symbol
    # Names come from GO.sqlite.
    con = sqlite3.connect(real_slice / "GO.sqlite")
    names = dict(con.execute("SELECT go_id, term FROM go_term"))
    con.close()
    assert all(t.term == names[t.go_id] for terms in go.values() for t in terms)


@needs_real
def test_real_slice_iea_filtering(real_slice):
    default = go_annotations(path=real_slice)
    everything = go_annotations(path=real_slice, evidence_exclude=None)
    iea_only = {g for g, c in slice_rows(real_slice, "GFAP", "go_cc")} - {
        g for g, c in slice_rows(real_slice, "GFAP", "go_cc") if c != "IEA"
    }
    assert iea_only  # e.g. "astrocyte end-foot" is IEA-only for GFAP
    assert not iea_only & {t.go_id for t in default["GFAP"]}
    assert iea_only <= {t.go_id for t in everything["GFAP"]}
    assert all("IEA" not in t.evidence for terms in default.values() for t in terms)
    assert any("IEA" in t.evidence for terms in everything.values() for t in terms)
    assert sum(map(len, everything.values())) > sum(map(len, default.values()))


@needs_real
def test_real_slice_ordering_by_specificity(real_slice):
    con = sqlite3.connect(real_slice / "org.Hs.eg.sqlite")
    n_genes = {}
    for table in ("go_bp_all", "go_mf_all", "go_cc_all"):
        n_genes.update(
            con.execute(f"SELECT go_id, COUNT(DISTINCT _id) FROM {table} GROUP BY go_id")
        )
    con.close()
    for symbol, terms in go_annotations(path=real_slice).items():
        assert all(t.n_genes == n_genes[t.go_id] for t in terms), symbol
        keys = [(t.n_genes, best_rank(t)) for t in terms]
        assert keys == sorted(keys), symbol
        # Terms shared by several of the four genes come after the gene's own ones.
        assert terms[0].n_genes == 1
        assert terms[0].n_genes < terms[-1].n_genes


@needs_real
def test_real_slice_definitions_and_status(real_slice, monkeypatch):
    defs = go_term_definitions(["GO:0042101", "GO:0005882"], path=real_slice)
    assert "T cell receptor" in defs["GO:0042101"]
    assert "intermediate filament" in defs["GO:0005882"].lower() or defs["GO:0005882"]
    monkeypatch.setenv("KBFM_GO_DB_DIR", str(real_slice))
    status = go_status()
    assert status["species"]["human"]["n_genes"] == 4
    assert status["species"]["human"]["organism"] == "Homo sapiens"
    assert status["go_release"]  # GOSOURCEDATE of the packaged GO.sqlite


@needs_real
@pytest.mark.slow
def test_full_real_database():
    assert REAL is not None
    go = go_annotations(path=REAL)
    assert len(go) > 15_000
    cd3e = go["CD3E"]
    assert "T cell receptor complex" in {t.term for t in cd3e}
    assert cd3e[0].n_genes < 50 < cd3e[-1].n_genes
    clear_memory_caches()
    assert go_annotations(path=REAL) == go  # from the cache file
