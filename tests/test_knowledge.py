"""Knowledge layer: Cell Ontology, curated markers, gene descriptions, gene symbols."""

from __future__ import annotations

import gzip
import json
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import SHARED_DATA, needs_shared

import kbfm
from kbfm._errors import KbfmInputError
from kbfm.knowledge import (
    CellOntology,
    GeneKnowledge,
    alias_table_from_ncbi,
    human_to_mouse,
    load_gene_knowledge,
    load_marker_file,
    looks_like_ensembl,
    marker_sets,
    marker_table,
    normalize_symbols,
)

GENES = SHARED_DATA / "genes"


@pytest.fixture(scope="module")
def onto():
    return CellOntology.load()


def test_ontology_loads_from_the_package(onto):
    assert len(onto) > 3000  # 3,596 terms in the release, deprecated ones excluded
    assert onto.version.startswith("v20")


@pytest.mark.parametrize("name", ["CL:0000084", "CL_0000084", "T cell", "t-cell", "T lymphocyte"])
def test_lookup_by_id_label_or_synonym(onto, name):
    assert onto.term(name).id == "CL:0000084"


def test_unknown_term_suggests_close_labels(onto):
    with pytest.raises(KbfmInputError, match="Did you mean: 'B cell'"):
        onto.term("B cel")


def test_descendants_of_leukocyte(onto):
    ids = onto.descendants("leukocyte")
    assert {"CL:0000084", "CL:0000236", "CL:0000623"} <= set(ids)
    assert "CL:0000115" not in ids  # endothelial cell


def test_relation_full_partial_none(onto):
    assert onto.relation("CL:0000084", "CL:0000084") == "full"
    assert onto.relation("T cell", "regulatory T cell") == "partial"
    assert onto.relation("regulatory T cell", "T cell") == "partial"
    assert onto.relation("B cell", "T cell") == "none"
    assert onto.relation("cell", "T cell") == "none"  # generic roots earn nothing


def test_card_holds_definition_and_markers(onto):
    card = onto.card("natural killer cell", markers=["NKG7", "GNLY"])
    assert card.startswith("natural killer cell.") and "Marker genes: NKG7, GNLY." in card


def test_curated_markers_use_valid_terms(onto):
    table = marker_table()
    for cid, label in table[["cl_id", "cell_type"]].drop_duplicates().to_numpy():
        assert onto.term(cid).label == label
    assert table["source"].str.len().min() > 20  # every fact cites a source


def test_marker_sets_fall_back_to_descendants(onto):
    sets = marker_sets(cell_types=["T cell", "lymphocyte"])
    assert "CD3E" in sets["CL:0000084"]
    assert {"MS4A1", "NKG7", "CD3E"} <= set(sets[onto.term("lymphocyte").id])


def test_mouse_markers_by_orthology():
    mouse = marker_table("mouse")
    assert "Cd3e" in set(mouse["gene"]) and "CD3E" not in set(mouse["gene"])


@needs_shared
def test_panglaodb_and_cellmarker_loaders():
    pang = load_marker_file(SHARED_DATA / "markers/PanglaoDB_markers_27_Mar_2020.tsv")
    assert "MS4A1" in pang["B cells"]
    cm = load_marker_file(SHARED_DATA / "markers/CellMarker2_Human_Aug.csv", kind="cellmarker")
    assert len(cm) > 10 and all(isinstance(g, str) for genes in cm.values() for g in genes)


def test_builtin_gene_knowledge_is_offline():
    gk = GeneKnowledge.builtin()
    assert "NKG7" in gk and "natural killer cell" in gk.text("NKG7")
    assert gk.source == "builtin" and "CL-" in gk.version


@needs_shared
def test_refseq_summaries_loader():
    gk = load_gene_knowledge(GENES / "refseq_summaries_human.tsv.gz")
    assert len(gk) == 15121
    assert gk.text("CD3E").startswith("CD3E: CD3e molecule. The protein encoded by this gene")


@needs_shared
def test_ncbi_gene_info_loader_with_and_without_summaries(tmp_path):
    info = GENES / "ncbi_gene_info/Homo_sapiens.gene_info.gz"
    plain = GeneKnowledge.from_ncbi(info)
    assert "protein-coding" in plain.text("CD4")
    summaries = tmp_path / "summaries.tsv"
    summaries.write_text(
        "GeneID\tsummary\n920\tCD4 is a membrane glycoprotein of T helper cells.\n"
    )
    rich = GeneKnowledge.from_ncbi(info, summaries)
    assert "membrane glycoprotein" in rich.text("CD4")


def test_genept_json_and_table_loaders(tmp_path):
    path = tmp_path / "genept.json"
    path.write_text(json.dumps({"CD19": "B-lymphocyte antigen CD19."}))
    assert load_gene_knowledge(path).text("CD19") == "CD19: B-lymphocyte antigen CD19."
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(["not", "a", "mapping"]))
    with pytest.raises(KbfmInputError, match="JSON object"):
        load_gene_knowledge(bad)
    table = tmp_path / "mine.csv"
    table.write_text("gene,text\nCD19,B cell antigen\n")
    with pytest.raises(KbfmInputError, match=r"lacks column\(s\) \['description', 'symbol'\]"):
        load_gene_knowledge(table)
    assert (
        GeneKnowledge.from_table(table, symbol_col="gene", text_col="text").get("cd19")
        == "B cell antigen"
    )


def test_unknown_source_lists_known_ones():
    with pytest.raises(KbfmInputError, match=r"\['atlas', 'builtin', 'ncbi'\]"):
        load_gene_knowledge("wikipedia")


def test_ncbi_source_explains_how_to_download():
    with pytest.raises(KbfmInputError, match="kbfm knowledge download ncbi"):
        load_gene_knowledge("ncbi")


def test_symbols_case_ensembl_and_report():
    symbols, report = normalize_symbols(
        ["cd3e", "ENSG00000010610.9", "MS4A1", "NOT_A_GENE"], known={"CD3E", "CD4", "MS4A1"}
    )
    assert symbols == ["CD3E", "CD4", "MS4A1", None]
    assert report.n_matched == 3 and report.unmatched == ["NOT_A_GENE"]
    assert report.how == {"cd3e": "case", "ENSG00000010610.9": "ensembl", "MS4A1": "exact"}
    assert "3/4 genes matched" in report.summary()


def test_mouse_to_human_orthologs():
    symbols, report = normalize_symbols(
        ["Cd3e", "Ms4a1", "Nkg7"], species="mouse", target_species="human"
    )
    assert symbols == ["CD3E", "MS4A1", "NKG7"] and report.how["Cd3e"] == "ortholog"
    assert human_to_mouse(["CD8A"]) == {"CD8A": "Cd8a"}


def test_looks_like_ensembl():
    assert looks_like_ensembl(["ENSG00000010610", "ENSMUSG00000000001", "CD4"])
    assert not looks_like_ensembl(["CD4", "CD8A"])


@needs_shared
def test_aliases_from_ncbi_gene_info():
    aliases = alias_table_from_ncbi(GENES / "ncbi_gene_info/Homo_sapiens.gene_info.gz")
    assert aliases["SEPT7"] == "SEPTIN7" and aliases["MARCH1"] == "MARCHF1"  # renamed in 2019
    assert "MS4A2" not in aliases  # an official symbol is never treated as an alias
    symbols, report = normalize_symbols(
        ["SEPT7", "T3E", "CD3E"], known={"CD3E", "SEPTIN7"}, aliases=aliases
    )
    assert symbols == ["SEPTIN7", "CD3E", "CD3E"] and report.how["SEPT7"] == "alias"


def test_download_ncbi_from_a_local_server(tmp_path, monkeypatch):
    monkeypatch.setattr(kbfm.settings, "offline", False)  # "online", with a local server
    root = tmp_path / "www"
    info_dir = root / "gene/DATA/GENE_INFO/Mammalia"
    info_dir.mkdir(parents=True)
    header = "#tax_id\tGeneID\tSymbol\tLocusTag\tSynonyms\tdbXrefs\tchromosome\tmap_location\t"
    header += "description\ttype_of_gene\tSymbol_from_nomenclature_authority\t"
    header += "Full_name_from_nomenclature_authority\n"
    rows = [
        "9606\t920\tCD4\t-\tT4\t-\t12\t-\tCD4 molecule\tprotein-coding\tCD4\tCD4 molecule\n",
        "9606\t999\tMIR1\t-\t-\t-\t1\t-\tmicroRNA 1\tncRNA\tMIR1\tmicroRNA 1\n",
    ]
    (info_dir / "Homo_sapiens.gene_info.gz").write_bytes(
        gzip.compress((header + "".join(rows)).encode())
    )
    summary = {
        "result": {"uids": ["920"], "920": {"summary": "CD4 is a T helper cell co-receptor."}}
    }
    (root / "esummary.fcgi").write_text(json.dumps(summary))

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def translate_path(self, path):
            return super().translate_path(path.split("?")[0])

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        from kbfm.knowledge.ncbi_download import download_ncbi

        folder = download_ncbi("human", base_url=url, eutils_url=url)
    finally:
        server.shutdown()
        server.server_close()
    assert folder == kbfm.settings.cache_dir / "knowledge/ncbi/human"
    gk = load_gene_knowledge("ncbi")
    assert gk.text("CD4") == "CD4: CD4 molecule. CD4 is a T helper cell co-receptor."
