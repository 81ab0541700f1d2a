"""The Cell Ontology as read from the release shipped by cellxgene-ontology-guide."""

from __future__ import annotations

import pytest

from kbfm._errors import KbfmInputError
from kbfm.knowledge import CellOntology, available_versions

T_CELL = "CL:0000084"


@pytest.fixture(scope="module")
def onto() -> CellOntology:
    return CellOntology.load()


def test_load_reads_the_current_release_once(onto):
    assert onto.version == available_versions()[-1]
    assert CellOntology.load() is onto
    assert CellOntology.load(onto.version.removeprefix("v")) is onto


@pytest.mark.skipif(
    "v2026-03-26" not in available_versions(), reason="CL v2026-03-26 not shipped here"
)
def test_release_2026_03_26_has_3596_terms_of_which_272_obsolete():
    release = CellOntology.load("v2026-03-26")
    assert len(release) + len(release.obsolete) == 3596
    assert len(release.obsolete) == 272


def test_unknown_version_lists_the_shipped_ones():
    with pytest.raises(KbfmInputError, match=r"v1999-01-01.*choose one of"):
        CellOntology.load("v1999-01-01")


@pytest.mark.parametrize(
    "name",
    ["CL:0000084", "CL_0000084", "cl:0000084", "T cell", "t-cell", "T  Lymphocyte", "T_cell"],
)
def test_term_accepts_ids_labels_and_synonyms(onto, name):
    assert onto.term(name).id == T_CELL


def test_term_ignores_punctuation_in_labels(onto):
    assert onto.term("CD4-positive alpha-beta T cell").label == "CD4-positive, alpha-beta T cell"


def test_term_fields(onto):
    term = onto.term("B cell")
    assert term.id == "CL:0000236"
    assert "B lymphocyte" in term.synonyms
    assert term.definition.startswith("A lymphocyte of B lineage")
    assert "CL:0000542" in term.ancestors and term.id not in term.ancestors


def test_unknown_name_suggests_close_labels(onto):
    with pytest.raises(KbfmInputError, match="Did you mean: 'B cell'"):
        onto.term("B cel")


def test_lookup_is_never_fuzzy(onto):
    assert onto.lookup("B cel") is None
    assert onto.lookup("natural killer cell") == "CL:0000623"
    assert "NK cell" in onto and "NK cel" not in onto


def test_obsolete_terms_are_not_looked_up_and_name_their_replacement(onto):
    assert "CL:0000003" in onto.obsolete
    assert onto.lookup("CL:0000003") is None
    with pytest.raises(KbfmInputError, match=r"obsolete.*Use CL:0000000 \('cell'\)"):
        onto.term("CL:0000003")


def test_ancestors_nearest_first(onto):
    assert onto.ancestors("T cell")[0] == "CL:0000542"  # lymphocyte
    assert "CL:0000000" in onto.ancestors("T cell")


def test_descendants(onto):
    below = onto.descendants("T cell")
    assert below[0] == T_CELL
    assert {"CL:0000624", "CL:0000625", "CL:0000815"} <= set(below)
    assert T_CELL not in onto.descendants("T cell", include_self=False)
    assert "CL:0000236" not in below  # B cell


def test_is_ancestor_is_strict(onto):
    assert onto.is_ancestor("T cell", "regulatory T cell")
    assert not onto.is_ancestor("regulatory T cell", "T cell")
    assert not onto.is_ancestor("T cell", "T cell")


def test_relation_grades_predictions(onto):
    assert onto.relation("CL:0000084", "T-cell") == "full"
    assert onto.relation("T cell", "regulatory T cell") == "partial"
    assert onto.relation("regulatory T cell", "T cell") == "partial"
    assert onto.relation("B cell", "T cell") == "none"
    assert onto.relation("unknown", "T cell") == "none"


@pytest.mark.parametrize("generic", ["cell", "CL:0000255"])  # cell, eukaryotic cell
def test_relation_gives_no_credit_for_generic_roots(onto, generic):
    assert onto.is_ancestor(generic, "T cell")
    assert onto.relation(generic, "T cell") == "none"


def test_card_text(onto):
    assert onto.card("B cell", markers=["MS4A1", "CD79A"]) == (
        "B cell. Synonyms: B lymphocyte, B-cell, B-lymphocyte. "
        "Definition: A lymphocyte of B lineage that is capable of B cell mediated immunity. "
        "Marker genes: MS4A1, CD79A."
    )


def test_card_leaves_out_empty_parts(onto):
    term = next(t for t in onto.terms.values() if not t.synonyms and not t.definition)
    assert onto.card(term.id) == f"{term.label}."


def test_candidates_under_leukocyte(onto):
    ids = onto.candidates("leukocyte")
    assert ids[0] == "CL:0000738"
    assert {T_CELL, "CL:0000236", "CL:0000623"} <= set(ids)
    assert "CL:0000115" not in ids  # endothelial cell
    assert not set(ids) & set(onto.obsolete)


def test_candidates_can_add_obsolete_terms_replaced_inside_the_subtree(onto):
    live = onto.candidates("leukocyte")
    extra = set(onto.candidates("leukocyte", exclude_deprecated=False)) - set(live)
    assert extra and extra <= set(onto.obsolete)
