"""kbfm's curated marker table, marker sets per Cell Ontology id, and public marker files."""

from __future__ import annotations

import logging

import pytest
from _paths import SHARED as SHARED_PATH

from kbfm._errors import KbfmInputError
from kbfm.knowledge import CellOntology, load_marker_file, marker_sets, marker_table

SHARED = SHARED_PATH
needs_shared = pytest.mark.skipif(not SHARED.exists(), reason="../shared/data not present")

# The cell types the table must cover (CL ids of the current release).
REQUIRED = {
    "CL:0000084": "T cell",
    "CL:0000624": "CD4-positive, alpha-beta T cell",
    "CL:0000625": "CD8-positive, alpha-beta T cell",
    "CL:0000794": "CD8-positive, alpha-beta cytotoxic T cell",
    "CL:0000815": "regulatory T cell",
    "CL:0000895": "naive thymus-derived CD4-positive, alpha-beta T cell",
    "CL:0000900": "naive thymus-derived CD8-positive, alpha-beta T cell",
    "CL:0000897": "CD4-positive, alpha-beta memory T cell",
    "CL:0000623": "natural killer cell",
    "CL:0000236": "B cell",
    "CL:0000786": "plasma cell",
    "CL:0001054": "CD14-positive monocyte",
    "CL:0002396": "CD14-low, CD16-positive monocyte",
    "CL:0000576": "monocyte",
    "CL:0000235": "macrophage",
    "CL:0000451": "dendritic cell",
    "CL:0000784": "plasmacytoid dendritic cell",
    "CL:0000990": "conventional dendritic cell",
    "CL:0008001": "hematopoietic precursor cell",
    "CL:0000233": "platelet",
    "CL:0000556": "megakaryocyte",
    "CL:0000232": "erythrocyte",
    "CL:0001065": "innate lymphoid cell",
    "CL:0000097": "mast cell",
    "CL:0000775": "neutrophil",
    "CL:0000115": "endothelial cell",
    "CL:0000359": "vascular associated smooth muscle cell",
    "CL:0000057": "fibroblast",
    "CL:0000066": "epithelial cell",
    "CL:0000182": "hepatocyte",
    "CL:0000312": "keratinocyte",
    "CL:0000127": "astrocyte",
    "CL:0000128": "oligodendrocyte",
    "CL:0000540": "neuron",
    "CL:0000129": "microglial cell",
    "CL:0000746": "cardiac muscle cell",
    "CL:0000136": "adipocyte",
    "CL:0000669": "pericyte",
}


@pytest.fixture(scope="module")
def onto() -> CellOntology:
    return CellOntology.load()


@pytest.fixture(scope="module")
def table():
    return marker_table()


def test_table_columns(table):
    assert list(table.columns) == ["cl_id", "cell_type", "gene", "evidence", "source"]
    assert not table.isna().any().any()


def test_every_id_exists_and_its_label_matches(table, onto):
    for cid, label in table[["cl_id", "cell_type"]].drop_duplicates().to_numpy():
        assert cid in onto.terms, f"{cid} ({label}) is not a live CL term"
        assert onto.terms[cid].label == label


def test_required_cell_types_are_covered(table):
    labels = dict(table[["cl_id", "cell_type"]].drop_duplicates().to_numpy())
    assert {cid: labels.get(cid) for cid in REQUIRED} == REQUIRED


def test_each_cell_type_has_4_to_10_distinct_markers(table):
    assert not table.duplicated(["cl_id", "gene"]).any()
    sizes = table.groupby("cl_id").size()
    assert sizes.between(4, 10).all(), sizes[~sizes.between(4, 10)]


def test_every_row_has_evidence_and_a_source(table):
    assert set(table["evidence"]) == {"protein", "rna"}
    assert table["source"].str.contains(r"\(.*\d{4}.*\)").all()  # a reference with a year


@pytest.mark.parametrize(
    ("cell_type", "expected"),
    [
        ("natural killer cell", {"NKG7", "GNLY", "KLRD1", "NCAM1", "KLRF1", "PRF1"}),
        ("B cell", {"MS4A1", "CD79A", "CD79B", "CD19", "BANK1"}),
        ("plasmacytoid dendritic cell", {"LILRA4", "IL3RA", "CLEC4C"}),
        ("regulatory T cell", {"FOXP3", "IL2RA"}),
    ],
)
def test_canonical_markers(cell_type, expected):
    sets = marker_sets(cell_types=[cell_type])
    assert expected <= set(next(iter(sets.values())))


def test_marker_sets_are_keyed_by_id_for_ids_and_labels():
    sets = marker_sets(cell_types=["CL:0000236", "natural killer cell"])
    assert list(sets) == ["CL:0000236", "CL:0000623"]


def test_all_curated_sets_by_default(table):
    assert set(marker_sets(source="curated")) == set(table["cl_id"])
    # The default joins cellconsensus: every curated type plus ~1,330 more.
    assert set(table["cl_id"]) <= set(marker_sets())


def test_a_type_with_own_markers_keeps_them():
    assert marker_sets(cell_types=["T cell"])["CL:0000084"][:3] == ["CD3D", "CD3E", "CD3G"]


def test_a_type_without_markers_gets_the_union_of_its_descendants(onto):
    lymphocyte = marker_sets(cell_types=["lymphocyte"])[onto.term("lymphocyte").id]
    assert {"CD3E", "MS4A1", "NKG7", "FOXP3"} <= set(lymphocyte)
    assert "CD14" not in lymphocyte
    assert len(lymphocyte) == len(set(lymphocyte))


def test_a_type_without_any_curated_markers_is_empty_with_a_warning(caplog):
    import importlib

    importlib.import_module("kbfm.knowledge.markers")._WARNED_EMPTY.clear()
    with caplog.at_level(logging.WARNING, logger="kbfm.knowledge.markers"):
        sets = marker_sets(cell_types=["hepatic stellate cell"], source="curated")
    assert sets == {"CL:0000632": []}
    assert "no markers" in caplog.text
    # cellconsensus knows it.
    assert "HGF" in marker_sets(cell_types=["hepatic stellate cell"])["CL:0000632"]


def test_unknown_cell_type_is_an_error():
    with pytest.raises(KbfmInputError, match="Did you mean"):
        marker_sets(cell_types=["B cels"])


def test_mouse_markers_by_orthology():
    mouse = marker_table("mouse")
    genes = set(mouse["gene"])
    assert {"Cd3e", "Ms4a1", "Foxp3"} <= genes and "CD3E" not in genes
    assert marker_sets("mouse", ["B cell"])["CL:0000236"][:2] == ["Ms4a1", "Cd79a"]


def test_mouse_markers_skip_many_to_many_families():
    # LILRA4 has only many-to-many mouse orthologs (the PIR/LILR family).
    assert "LILRA4" in set(marker_table()["gene"])
    pdc = marker_sets("mouse", ["plasmacytoid dendritic cell"])["CL:0000784"]
    assert "Il3ra" in pdc and not {"Lilra6", "Pira2", "Lilrb4a"} & set(pdc)


def test_unknown_species():
    with pytest.raises(KbfmInputError, match="'human' or 'mouse'"):
        marker_table("zebrafish")


@pytest.mark.shared_data
@needs_shared
def test_panglaodb_loader_filters_species():
    path = SHARED / "markers" / "PanglaoDB_markers_27_Mar_2020.tsv"
    human = load_marker_file(path, kind="panglaodb", species="human")
    mouse = load_marker_file(path, kind="panglaodb", species="mouse")
    assert {"MS4A1", "CD79A"} <= set(human["B cells"])
    assert "FCER2" in human["B cells"] and "FCER2" not in mouse["B cells"]  # "Hs" row
    assert "SIGLECG" in mouse["B cells"] and "SIGLECG" not in human["B cells"]  # "Mm" row


@pytest.mark.shared_data
@needs_shared
def test_cellmarker_loader_splits_gene_lists():
    sets = load_marker_file(SHARED / "markers" / "CellMarker2_Human_Aug.csv", kind="cellmarker")
    assert {"PLIN1", "LEP", "ADIPOQ"} <= set(sets["Adipocyte"])
    genes = [g for gs in sets.values() for g in gs]
    assert all(g and "," not in g and g == g.strip() for g in genes)
    assert all(len(gs) == len(set(gs)) for gs in sets.values())


def test_marker_file_with_wrong_columns_names_them(tmp_path):
    path = tmp_path / "markers.csv"
    path.write_text("tissue,cell,genes\nBlood,B cell,MS4A1\n")
    with pytest.raises(KbfmInputError, match=r"markers\.csv.*missing column\(s\) \['CT', 'Gene'\]"):
        load_marker_file(path, kind="cellmarker")


def test_marker_file_kind_is_checked(tmp_path):
    path = tmp_path / "markers.tsv"
    path.write_text("x\n")
    with pytest.raises(KbfmInputError, match="choose one of"):
        load_marker_file(path, kind="azimuth")
