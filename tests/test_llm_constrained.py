"""Constrained LLM annotation scores the answer line the prompt asks for.

The celltype prompts ask for ``cluster_id: cell type name`` lines, so constrained
scoring must score ``"<cluster>: <label>"``, not the bare label (a bare label is an
unlikely start of the answer for any model that follows the prompt: Qwen2.5-1.5B then
picked the same type for nearly every cluster).
"""

from __future__ import annotations

import numpy as np
import pytest
from anndata import AnnData

import kbfm
from kbfm.encoders.llm import LLM, ChatResult
from kbfm.tl.annotate.llm import SCORED_ANSWER, answer_line, llm_cluster_answers

MARKERS = {
    "0": ["MS4A1", "CD79A", "CD19"],
    "1": ["CD3E", "CD3D", "CD2"],
    "2": ["LYZ", "CD14", "S100A8"],
}
CANDIDATES = ["CL:0000236", "CL:0000084", "CL:0000576"]  # B cell, T cell, monocyte
TRUTH = {"0": "B cell", "1": "T cell", "2": "monocyte"}


class RecordingLLM(LLM):
    """Scores an option 0 when it is the line ``"<cluster>: <truth>"``, else -5."""

    def __init__(self) -> None:
        self.name = "recording"
        self.model_id = "recording"
        self.calls: list[tuple[list[dict], list[str]]] = []

    def chat(self, messages, *, tools=None, max_tokens=256) -> ChatResult:
        raise AssertionError("constrained annotation must not generate text")

    def score_options(self, messages, options):
        self.calls.append((messages, list(options)))
        # The one-cluster prompt ends with that cluster's marker line.
        cluster = messages[-1]["content"].strip().splitlines()[-1].split(":")[0]
        return [0.0 if o == f"{cluster}: {TRUTH[cluster]}" else -5.0 for o in options]


@pytest.fixture(scope="module")
def ontology():
    return kbfm.knowledge.CellOntology.load()


def _answers(llm, ontology, *, retrieval: bool):
    return llm_cluster_answers(
        MARKERS,
        llm=llm,
        ontology=ontology,
        candidates=CANDIDATES,
        species="human",
        tissue="blood",
        constrained=True,
        retrieval=retrieval,
    )


@pytest.mark.parametrize("retrieval", [True, False])
def test_constrained_scores_the_prompted_answer_line(ontology, retrieval):
    llm = RecordingLLM()
    answers, confidence, info = _answers(llm, ontology, retrieval=retrieval)
    labels = [ontology.terms[c].label for c in CANDIDATES]
    assert len(llm.calls) == len(MARKERS)  # one prompt per cluster
    for (messages, options), cluster in zip(llm.calls, MARKERS, strict=True):
        assert options == [f"{cluster}: {label}" for label in labels]
        assert "cluster_id: cell type name" in messages[-1]["content"]
        # Each prompt names its own cluster only.
        others = [c for c in MARKERS if c != cluster]
        assert all(f"\n{c}: {MARKERS[c][0]}" not in messages[-1]["content"] for c in others)
    # The answer is the bare label (then mapped onto the ontology), never the line.
    assert answers == TRUTH
    assert all(c > 0.9 for c in confidence.values())
    assert info["scored_answer"] == SCORED_ANSWER
    assert info["prompt"] == f"celltype_annotation.v{2 if retrieval else 1}"


def test_answer_line_matches_what_the_parser_reads():
    from kbfm.tl.annotate.llm import parse_answer_lines

    line = answer_line("7", "CD14-positive monocyte")
    assert parse_answer_lines(line, ["7"]) == {"7": "CD14-positive monocyte"}


def test_constrained_annotation_end_to_end_with_a_recording_llm(ontology):
    """Through kbfm.tl.annotate: labels land in obs, ids are candidates, provenance says how."""
    rng = np.random.default_rng(0)
    genes = sorted({g for genes in MARKERS.values() for g in genes} | {"ACTB", "GAPDH"})
    X = rng.poisson(0.2, size=(60, len(genes))).astype(np.float32)
    cluster = np.repeat(list(MARKERS), 20)
    for i, c in enumerate(cluster):
        for g in MARKERS[c]:
            X[i, genes.index(g)] += 6
    adata = AnnData(X)
    adata.var_names = genes
    adata.obs["cluster"] = cluster
    llm = RecordingLLM()
    kbfm.tl.annotate(
        adata,
        method="llm",
        llm=llm,
        groupby="cluster",
        candidates=CANDIDATES,
        constrained=True,
        species="human",
        tissue="blood",
    )
    got = adata.obs.groupby("cluster", observed=True)["kbfm_celltype"].first().astype(str)
    assert got.to_dict() == TRUTH
    record = adata.uns["kbfm"]["annotate"]
    assert record["constrained"] is True and record["scored_answer"] == SCORED_ANSWER


def test_tiny_qwen_scores_every_candidate_line(ontology):
    """A real (tiny, random) Qwen2 through HFCausalLM: one finite score per candidate line."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from test_llm_qwen import tiny_qwen2, tiny_tokenizer

    from kbfm.encoders.llm import HFCausalLM

    tok = tiny_tokenizer()
    llm = HFCausalLM.from_model("tiny", tiny_qwen2(len(tok)), tok)
    seen: list[list[str]] = []
    score = llm.score_options

    def recording(messages, options, **kw):
        seen.append(list(options))
        return score(messages, options, **kw)

    llm.score_options = recording  # type: ignore[method-assign]
    answers, confidence, _ = _answers(llm, ontology, retrieval=True)
    labels = [ontology.terms[c].label for c in CANDIDATES]
    assert set(answers.values()) <= set(labels)
    assert all(0 < c <= 1 for c in confidence.values())
    assert seen[0] == [f"0: {label}" for label in labels]
