"""Zero-shot annotation and its metrics on generated data with known truth."""

from __future__ import annotations

import numpy as np
import pytest

import kbfm
from kbfm._errors import KbfmInputError
from kbfm.knowledge import CellOntology, marker_sets

TYPES = ["B cell", "natural killer cell", "CD14-positive monocyte", "plasmacytoid dendritic cell"]


@pytest.fixture(scope="module")
def ontology():
    return CellOntology.load()


@pytest.fixture
def simulated(ontology):
    """Counts where each cell type over-expresses its curated markers."""
    ids = [ontology.term(t).id for t in TYPES]
    markers = marker_sets(cell_types=ids)
    adata = kbfm.datasets.synthetic_expression(
        {cid: markers[cid] for cid in ids}, n_cells_per_type=30
    )
    import scanpy as sc

    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    return adata


@pytest.mark.parametrize("groupby", [None, "auto"])
def test_zero_shot_recovers_simulated_types(simulated, groupby):
    # A closed candidate list: the four types and two distractors.
    kbfm.tl.annotate(simulated, candidates=[*TYPES, "T cell", "neutrophil"], groupby=groupby)
    result = kbfm.tl.evaluate_annotation(
        simulated.obs["cell_type"].astype(str), simulated.obs["kbfm_celltype_id"].astype(str)
    )
    assert result["accuracy"] >= 0.9
    assert simulated.obs["kbfm_celltype_score"].between(-1, 1).all()
    assert simulated.obsm["kbfm_celltype_scores"].shape[0] == simulated.n_obs
    assert simulated.uns["kbfm"]["annotate"]["method"] == "zero_shot"


def test_zero_shot_over_a_whole_branch(simulated, caplog):
    """'leukocyte' now opens ~120 knowledge-bearing types, not the 30 curated ones."""
    with caplog.at_level("INFO", logger="kbfm"):
        kbfm.tl.annotate(simulated, candidates="leukocyte", groupby="auto")
    record = simulated.uns["kbfm"]["annotate"]
    assert record["n_candidates"] > 60
    assert "branch 'leukocyte'" in record["candidates_how"]
    assert any("candidate cell types" in r.message for r in caplog.records)
    result = kbfm.tl.evaluate_annotation(
        simulated.obs["cell_type"].astype(str), simulated.obs["kbfm_celltype_id"].astype(str)
    )
    # Exact or a parent/child of the truth (monocyte -> classical monocyte).
    assert result["ontology_accuracy"] >= 0.8
    assert result["none"] <= 0.05


def test_marker_score_baseline_recovers_simulated_types(simulated):
    candidates = [*TYPES, "T cell", "neutrophil"]
    kbfm.tl.annotate(simulated, method="marker_score", candidates=candidates, key_added="base")
    truth = simulated.obs["cell_type"].astype(str).to_numpy()
    # score_genes compares with random control genes; on 125 genes it is noisier
    assert np.mean(simulated.obs["base_id"].astype(str).to_numpy() == truth) >= 0.75


def test_candidates_must_exist(simulated):
    with pytest.raises(KbfmInputError, match="leukocite"):
        kbfm.tl.annotate(simulated, candidates=["B cell", "leukocite"])


def test_groupby_must_be_an_obs_column(simulated):
    with pytest.raises(KbfmInputError, match=r"not a column of adata\.obs"):
        kbfm.tl.annotate(simulated, groupby="clusters_that_do_not_exist")


def test_copy_leaves_input_untouched(simulated):
    out = kbfm.tl.annotate(simulated, candidates="leukocyte", copy=True)
    assert "kbfm_celltype" in out.obs and "kbfm_celltype" not in simulated.obs


def test_ontology_aware_scoring(ontology):
    t_cell, cd4 = ontology.term("T cell").id, ontology.term("CD4-positive, alpha-beta T cell").id
    b_cell = ontology.term("B cell").id
    res = kbfm.tl.evaluate_annotation(
        [cd4, cd4, cd4, b_cell], [cd4, t_cell, b_cell, b_cell], ontology=ontology
    )
    assert res["accuracy"] == 0.5
    assert res["full"] == 0.5 and res["partial"] == 0.25 and res["none"] == 0.25
    assert res["ontology_accuracy"] == pytest.approx(0.625)


def test_query_finds_the_named_cell_type(simulated):
    kbfm.tl.embed_genes(simulated)
    kbfm.tl.embed_cells(simulated, weighting="relative")
    kbfm.tl.query(simulated, "natural killer cell", key_added="nk")
    nk_id = CellOntology.load().term("natural killer cell").id
    is_nk = simulated.obs["cell_type"].astype(str) == nk_id
    assert simulated.obs.loc[is_nk, "nk"].mean() > simulated.obs.loc[~is_nk, "nk"].mean() + 0.1


def _same_annotation(a, b, key="kbfm_celltype"):
    assert a.obs[key].tolist() == b.obs[key].tolist()
    assert a.obs[f"{key}_id"].tolist() == b.obs[f"{key}_id"].tolist()
    np.testing.assert_array_equal(a.obs[f"{key}_score"], b.obs[f"{key}_score"])
    np.testing.assert_array_equal(a.obsm[f"{key}_scores"], b.obsm[f"{key}_scores"])
    first, second = (dict(x.uns["kbfm"]["annotate"]) for x in (a, b))
    first.pop("timestamp"), second.pop("timestamp")
    assert first == second


@pytest.mark.parametrize(
    ("method", "function"),
    [("zero_shot", kbfm.tl.annotate_zero_shot), ("marker_score", kbfm.tl.annotate_marker_score)],
)
def test_method_function_equals_the_dispatcher(simulated, method, function):
    kw = {"candidates": [*TYPES, "T cell"], "groupby": "auto", "copy": True}
    _same_annotation(kbfm.tl.annotate(simulated, method=method, **kw), function(simulated, **kw))


def test_dispatcher_refuses_an_option_of_another_method(simulated):
    with pytest.raises(KbfmInputError, match=r"llm='openai:gpt-4' \(method='llm'\)"):
        kbfm.tl.annotate(simulated, method="marker_score", llm="openai:gpt-4", tissue="brain")
    with pytest.raises(KbfmInputError, match=r"source='builtin' \(method='zero_shot'\)"):
        kbfm.tl.annotate(simulated, method="llm", source="builtin", llm="dry-run")
    assert "kbfm" not in simulated.uns  # refused before any work


def test_dispatcher_accepts_shared_options_and_defaults(simulated):
    # tissue and groupby are every method's; an option left at its default is no option.
    kbfm.tl.annotate(
        simulated, method="marker_score", candidates=TYPES, tissue="blood", llm="smollm2"
    )
    assert simulated.uns["kbfm"]["annotate"]["method"] == "marker_score"


def test_method_functions_take_only_their_own_options(simulated):
    with pytest.raises(TypeError, match="llm"):
        kbfm.tl.annotate_marker_score(simulated, llm="openai:gpt-4")
