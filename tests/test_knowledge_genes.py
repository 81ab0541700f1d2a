"""Gene knowledge sources, gene symbol normalisation, and the NCBI download."""

from __future__ import annotations

import gzip
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from _paths import SHARED as SHARED_PATH

import kbfm
from kbfm._errors import KbfmInputError, KbfmUnavailableError
from kbfm.knowledge import (
    GENE_KNOWLEDGE_SOURCES,
    GeneKnowledge,
    alias_table_from_ncbi,
    download_ncbi,
    ensembl_to_symbol,
    human_to_mouse,
    load_gene_knowledge,
    looks_like_ensembl,
    mouse_to_human,
    normalize_symbols,
)

SHARED = SHARED_PATH
GENES = SHARED / "genes"
HUMAN_GENE_INFO = GENES / "ncbi_gene_info" / "Homo_sapiens.gene_info.gz"
needs_shared = pytest.mark.skipif(not SHARED.exists(), reason="../shared/data not present")

GENE_INFO_HEADER = (
    "#tax_id\tGeneID\tSymbol\tLocusTag\tSynonyms\tdbXrefs\tchromosome\tmap_location\t"
    "description\ttype_of_gene\tSymbol_from_nomenclature_authority\t"
    "Full_name_from_nomenclature_authority\n"
)
GENE_INFO_ROWS = [
    "9606\t920\tCD4\t-\tT4|LEU3\t-\t12\t-\tCD4 molecule\tprotein-coding\tCD4\tCD4 molecule\n",
    "9606\t925\tCD8A\t-\tCD8\t-\t2\t-\tCD8a molecule\tprotein-coding\tCD8A\tCD8a molecule\n",
    "9606\t406904\tMIR1-1\t-\t-\t-\t20\t-\tmicroRNA 1-1\tncRNA\tMIR1-1\tmicroRNA 1-1\n",
]
SUMMARIES = {
    "920": "CD4 is a co-receptor of T helper cells.",
    "925": "CD8A is a co-receptor of cytotoxic T cells.",
}


def write_gene_info(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress((GENE_INFO_HEADER + "".join(GENE_INFO_ROWS)).encode()))
    return path


# ----------------------------------------------------------------------------- GeneKnowledge


@pytest.fixture
def small() -> GeneKnowledge:
    return GeneKnowledge(
        {"CD3E": "Part of the T cell receptor complex.", "Empty": "  "},
        source="small",
        version="1",
        names={"CD3E": "CD3e molecule"},
    )


def test_lookup_ignores_case_and_keeps_spelling(small):
    assert "cd3e" in small and "Empty" not in small  # empty descriptions are dropped
    assert small.get("Cd3e") == "Part of the T cell receptor complex."
    assert small.get("CD4") is None
    assert small.symbols == {"CD3E"} and len(small) == 1


def test_text_is_symbol_full_name_and_description(small):
    assert small.text("cd3e") == "CD3E: CD3e molecule. Part of the T cell receptor complex."


def test_text_of_an_unknown_gene_is_an_error(small):
    with pytest.raises(KbfmInputError, match=r"No description for gene 'CD4'.*'small'"):
        small.text("CD4")


def test_to_frame(small):
    frame = small.to_frame()
    assert frame.to_dict("records") == [
        {
            "symbol": "CD3E",
            "full_name": "CD3e molecule",
            "description": "Part of the T cell receptor complex.",
        }
    ]


def test_merge_keeps_this_source_for_shared_genes(small):
    other = GeneKnowledge({"cd3e": "other text", "CD4": "CD4 text"}, source="other")
    merged = small.merge(other)
    assert merged.get("CD3E") == "Part of the T cell receptor complex."
    assert merged.get("CD4") == "CD4 text" and len(merged) == 2
    assert merged.source == "small+other"


def test_merge_refuses_another_species(small):
    mouse = GeneKnowledge({"Cd3e": "x"}, source="m", species="mouse")
    with pytest.raises(KbfmInputError, match="mouse"):
        small.merge(mouse)


@pytest.mark.shared_data
@needs_shared
def test_refseq_summaries_from_shared_data():
    gk = GeneKnowledge.from_refseq_tsv(GENES / "refseq_summaries_human.tsv.gz")
    assert len(gk) == 15121
    assert gk.text("CD3E").startswith("CD3E: CD3e molecule. The protein encoded by this gene")


def test_refseq_table_plain_text(tmp_path):
    path = tmp_path / "summaries.tsv"
    path.write_text("entrez_id\tsymbol\tfull_name\tsummary\n920\tCD4\tCD4 molecule\tCo-receptor.\n")
    assert GeneKnowledge.from_refseq_tsv(path).text("CD4") == "CD4: CD4 molecule. Co-receptor."


@pytest.mark.shared_data
@needs_shared
def test_ncbi_gene_info_alone_gives_name_and_type():
    gk = GeneKnowledge.from_ncbi(HUMAN_GENE_INFO)
    assert gk.text("CD4") == "CD4: CD4 molecule, a protein-coding gene."
    assert gk.source == "ncbi"


def test_ncbi_gene_info_joined_to_summaries(tmp_path):
    info = write_gene_info(tmp_path / "gene_info.gz")
    summaries = tmp_path / "summaries.tsv"
    summaries.write_text("GeneID\tsummary\n920\tCD4 is a co-receptor of T helper cells.\n")
    gk = GeneKnowledge.from_ncbi(info, summaries)
    assert gk.text("CD4") == "CD4: CD4 molecule. CD4 is a co-receptor of T helper cells."
    assert gk.text("MIR1-1") == "MIR1-1: microRNA 1-1, a ncRNA gene."


def test_ncbi_table_without_gene_columns_is_named(tmp_path):
    path = tmp_path / "not_gene_info.tsv"
    path.write_text("a\tb\n1\t2\n")
    with pytest.raises(KbfmInputError, match=r"not_gene_info\.tsv lacks column"):
        GeneKnowledge.from_ncbi(path)


def test_genept_json(tmp_path):
    path = tmp_path / "genept.json"
    path.write_text(json.dumps({"CD19": "B-lymphocyte antigen CD19."}))
    gk = GeneKnowledge.from_genept_json(path)
    assert gk.text("CD19") == "CD19: B-lymphocyte antigen CD19."
    assert gk.source == "genept:genept.json"


def test_genept_json_must_map_symbols_to_strings(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"CD19": ["a", "list"]}))
    with pytest.raises(KbfmInputError, match=r"bad\.json.*for 'CD19'"):
        GeneKnowledge.from_genept_json(path)


def test_own_table_with_custom_columns(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("gene,text\nCD19,B cell antigen\n")
    gk = GeneKnowledge.from_table(path, symbol_col="gene", text_col="text")
    assert gk.get("cd19") == "B cell antigen"


def test_own_table_names_the_missing_columns(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("gene,text\nCD19,B cell antigen\n")
    with pytest.raises(KbfmInputError, match=r"mine\.csv lacks column\(s\) \['description'"):
        GeneKnowledge.from_table(path)


def test_builtin_describes_marker_genes_offline():
    gk = GeneKnowledge.builtin()
    text = gk.text("CD3E")
    assert text.startswith("CD3E: CD3E is a marker gene of T cell (CL:0000084). T cell: A type")
    assert "Also marks CD4-positive, alpha-beta T cell (CL:0000624)" in text
    assert gk.source == "builtin" and "+CL-v20" in gk.version
    assert "GAPDH" not in gk  # marker genes only


def test_registry_names_and_paths(tmp_path):
    assert {"builtin", "ncbi"} <= set(GENE_KNOWLEDGE_SOURCES)
    assert load_gene_knowledge("builtin").source == "builtin"
    refseq = tmp_path / "r.tsv"
    refseq.write_text("symbol\tsummary\nCD4\tCo-receptor.\n")
    assert load_gene_knowledge(refseq).source == "refseq:r.tsv"
    table = tmp_path / "t.csv"
    table.write_text("symbol,description\nCD4,Co-receptor.\n")
    assert load_gene_knowledge(str(table)).source == "table:t.csv"
    given = GeneKnowledge({"A": "b"}, source="x")
    assert load_gene_knowledge(given) is given


def test_unknown_source_lists_the_known_ones():
    with pytest.raises(
        KbfmInputError, match=r"\['atlas', 'builtin', 'ncbi'\].*Did you mean: 'ncbi'"
    ):
        load_gene_knowledge("ncbii")


def test_ncbi_source_says_how_to_download():
    with pytest.raises(KbfmInputError, match="kbfm knowledge download ncbi --species human"):
        load_gene_knowledge("ncbi")


# ----------------------------------------------------------------------------- gene symbols


def test_ensembl_ids_from_gencode():
    assert ensembl_to_symbol(["ENSG00000010610", "ENSG00000010610.10"]) == {
        "ENSG00000010610": "CD4",
        "ENSG00000010610.10": "CD4",
    }
    assert ensembl_to_symbol(["ENSMUSG00000032093"], species="mouse") == {
        "ENSMUSG00000032093": "Cd3e"
    }


def test_looks_like_ensembl_by_majority():
    assert looks_like_ensembl(["ENSG00000010610.9", "ENSMUSG00000032093", "CD4"])
    assert not looks_like_ensembl(["CD4", "CD8A", "ENSG00000010610"])
    assert not looks_like_ensembl([])


def test_normalize_reports_routes_counts_and_unmatched():
    symbols, report = normalize_symbols(
        ["cd3e", "ENSG00000010610.9", "MS4A1", "NOT_A_GENE"], known={"CD3E", "CD4", "MS4A1"}
    )
    assert symbols == ["CD3E", "CD4", "MS4A1", None]
    assert (report.n_total, report.n_matched, report.n_unmatched) == (4, 3, 1)
    assert report.unmatched == ["NOT_A_GENE"]
    assert report.how == {"cd3e": "case", "ENSG00000010610.9": "ensembl", "MS4A1": "exact"}
    assert report.mapping["ENSG00000010610.9"] == "CD4"
    assert report.summary().startswith("3/4 genes matched (")


def test_without_known_names_are_kept_and_ensembl_ids_resolved():
    symbols, report = normalize_symbols(["cd3e", "ENSG00000010610"])
    assert symbols == ["cd3e", "CD4"]
    assert report.how == {"cd3e": "exact", "ENSG00000010610": "ensembl"}


def test_ensembl_id_missing_from_known_is_unmatched():
    symbols, report = normalize_symbols(["ENSG00000010610"], known={"CD8A"})
    assert symbols == [None] and report.unmatched == ["ENSG00000010610"]


def test_mouse_to_human_orthologs():
    symbols, report = normalize_symbols(
        ["Cd3e", "Ms4a1", "ENSMUSG00000032093"], species="mouse", target_species="human"
    )
    assert symbols == ["CD3E", "MS4A1", "CD3E"]
    assert set(report.how.values()) == {"ortholog"}
    assert mouse_to_human(["Cd3e"]) == {"Cd3e": "CD3E"}
    assert human_to_mouse(["CD8A", "NOT_A_GENE"]) == {"CD8A": "Cd8a"}


def test_no_case_conversion_when_the_ortholog_table_lacks_a_gene():
    symbols, report = normalize_symbols(
        ["Fakegene1"], species="mouse", target_species="human", known={"FAKEGENE1"}
    )
    assert symbols == [None] and report.unmatched == ["Fakegene1"]


def test_unknown_species_is_an_error():
    with pytest.raises(KbfmInputError, match="target_species must be one of"):
        normalize_symbols(["CD4"], target_species="rat")


def test_aliases_map_old_symbols(tmp_path):
    aliases = alias_table_from_ncbi(write_gene_info(tmp_path / "gene_info.gz"))
    assert aliases == {"T4": "CD4", "LEU3": "CD4", "CD8": "CD8A"}
    symbols, report = normalize_symbols(["leu3", "CD8"], known={"CD4", "CD8A"}, aliases=aliases)
    assert symbols == ["CD4", "CD8A"] and report.how == {"leu3": "alias", "CD8": "alias"}


@pytest.mark.shared_data
@needs_shared
def test_aliases_from_the_shared_ncbi_gene_info():
    aliases = alias_table_from_ncbi(HUMAN_GENE_INFO)
    assert aliases["SEPT7"] == "SEPTIN7" and aliases["MARCH1"] == "MARCHF1"  # renamed 2019
    assert "MS4A2" not in aliases  # an official symbol is never an alias
    symbols, report = normalize_symbols(
        ["SEPT7", "T3E", "CD3E"], known={"CD3E", "SEPTIN7"}, aliases=aliases
    )
    assert symbols == ["SEPTIN7", "CD3E", "CD3E"]
    assert report.how == {"SEPT7": "alias", "T3E": "alias", "CD3E": "exact"}


def test_alias_table_needs_a_gene_info_file(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text("a\tb\n")
    with pytest.raises(KbfmInputError, match=r"x\.tsv is not an NCBI gene_info table"):
        alias_table_from_ncbi(path)


# ----------------------------------------------------------------------------- NCBI download


class FakeNcbi(BaseHTTPRequestHandler):
    """Serves gene_info.gz and esummary JSON; records the query of each request."""

    root: Path
    queries: list[dict[str, list[str]]]

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        type(self).queries.append(query)
        if url.path == "/esummary.fcgi":
            ids = query["id"][0].split(",")
            result = {"uids": ids, **{i: {"summary": SUMMARIES.get(i, "")} for i in ids}}
            body = json.dumps({"result": result}).encode()
        elif (self.root / url.path.lstrip("/")).is_file():
            body = (self.root / url.path.lstrip("/")).read_bytes()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def ncbi_server(tmp_path):
    root = tmp_path / "www"
    write_gene_info(root / "gene/DATA/GENE_INFO/Mammalia/Homo_sapiens.gene_info.gz")
    handler = type("Handler", (FakeNcbi,), {"root": root, "queries": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler.queries
    server.shutdown()
    server.server_close()


@pytest.fixture
def online(monkeypatch, tmp_path):
    monkeypatch.setattr(kbfm.settings, "offline", False)
    monkeypatch.setattr(kbfm.settings, "cache_dir", tmp_path / "cache")
    monkeypatch.delenv("NCBI_API_KEY", raising=False)


def test_download_then_load_as_the_ncbi_source(ncbi_server, online, tmp_path):
    url, queries = ncbi_server
    folder = download_ncbi("human", base_url=url, eutils_url=url, batch=1, email="me@lab.org")
    assert folder == tmp_path / "cache" / "knowledge" / "ncbi" / "human"
    assert sorted(p.name for p in folder.iterdir()) == [
        "download.json",
        "gene_info.gz",
        "summaries.tsv",
    ]
    summary_requests = [q for q in queries if "id" in q]
    assert [q["id"] for q in summary_requests] == [["920"], ["925"]]  # protein-coding only
    assert summary_requests[0]["email"] == ["me@lab.org"]
    gk = load_gene_knowledge("ncbi")
    assert gk.text("CD4") == "CD4: CD4 molecule. CD4 is a co-receptor of T helper cells."
    assert gk.version.startswith("NCBI gene, downloaded 20")


def test_download_keeps_the_api_key_out_of_files(ncbi_server, online, monkeypatch):
    url, queries = ncbi_server
    monkeypatch.setenv("NCBI_API_KEY", "SECRET-KEY-123")
    folder = download_ncbi("human", base_url=url, eutils_url=url)
    assert queries[-1]["api_key"] == ["SECRET-KEY-123"]
    for path in folder.iterdir():
        assert b"SECRET-KEY-123" not in path.read_bytes()


def test_unreachable_eutils_error_names_the_url_without_the_key(ncbi_server, online, monkeypatch):
    url, _ = ncbi_server
    monkeypatch.setenv("NCBI_API_KEY", "SECRET-KEY-123")
    with pytest.raises(KbfmUnavailableError, match=r"esummary\.fcgi.*HTTP 404") as err:
        download_ncbi("human", base_url=url, eutils_url=f"{url}/missing")
    assert "SECRET-KEY-123" not in str(err.value)


def test_unreachable_server_is_reported(online, tmp_path):
    with pytest.raises(KbfmUnavailableError, match=r"Could not download http://127\.0\.0\.1:9/"):
        download_ncbi("human", dest=tmp_path, base_url="http://127.0.0.1:9", timeout=5)


def test_download_refuses_when_offline(monkeypatch, tmp_path):
    monkeypatch.setattr(kbfm.settings, "offline", True)
    with pytest.raises(KbfmUnavailableError, match="offline"):
        download_ncbi("human", dest=tmp_path)
    assert not any(tmp_path.iterdir())


def test_csv_with_symbol_and_summary_columns_loads(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text('symbol,summary\nCD3E,"Part of the T cell receptor, CD3 complex."\n')
    gk = load_gene_knowledge(path)
    assert gk.get("CD3E") == "Part of the T cell receptor, CD3 complex."
