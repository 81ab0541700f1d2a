"""Atlas-breadth knowledge: packaged loaders, hash refusal, species, candidates, coverage."""

from __future__ import annotations

import logging
import pickle
import shutil

import numpy as np
import pytest
import scanpy as sc

import kbfm
from kbfm._errors import KbfmInputError
from kbfm.knowledge import CellOntology, GeneKnowledge, marker_sets
from kbfm.knowledge._packaged import (
    PANDAS_TABLE_GLOBALS,
    load_verified_pickle,
    package_file,
)
from kbfm.knowledge.consensus_markers import load_consensus_knowledge, load_lineage_markers
from kbfm.knowledge.gene_cards import atlas_knowledge, compose_card
from kbfm.knowledge.gene_table import gene_table
from kbfm.knowledge.species import detect_species
from kbfm.tl.annotate._candidates import TISSUE_LINEAGES, resolve_candidates


@pytest.fixture(scope="module")
def ontology():
    return CellOntology.load()


# --- loaders on the packaged data ---------------------------------------------------


def test_consensus_markers_cover_the_ontology_beyond_blood():
    ck = load_consensus_knowledge()
    assert len(ck.markers) == 1375
    assert ck.marker_genes("CL:0000127", 3) == ["GFAP", "AQP4", "SLC1A3"]  # astrocyte
    assert "PECAM1" in ck.marker_genes("CL:0000115", 5)  # endothelial cell
    # Specificity ranking pushes genes listed for hundreds of types down.
    assert "HLA-DRA" not in ck.marker_genes("CL:0000236", 10)  # B cell
    assert ck.lineage["CL:0000127"] == "neural"
    assert load_lineage_markers()["t_cell"][:1] == ["CD3D"]


def test_gene_table_names_every_gene_human_and_mouse():
    human = gene_table("human")
    assert (human["biotype"] == "protein_coding").sum() > 19_000
    assert human.loc["CD3E", "entrez"] == "916"
    assert "CD45" in human.loc["PTPRC", "aliases"].split(",")
    mouse = gene_table("mouse")
    assert mouse.loc["Gfap", "name"] == "glial fibrillary acidic protein"  # via ortholog
    assert mouse.loc["Gfap", "ensembl"].startswith("ENSMUSG")


def test_atlas_cards_for_all_protein_coding_genes():
    gk = atlas_knowledge("human")
    coding = gene_table("human").query("biotype == 'protein_coding'").index
    assert np.mean([g in gk for g in coding]) == 1.0
    card = gk.text("GFAP")
    assert card.startswith("GFAP: glial fibrillary acidic protein, a protein-coding gene.")
    assert "astrocyte" in card
    assert "Marker of B cell" in gk.text("MS4A1")
    mouse = atlas_knowledge("mouse")
    assert "astrocyte" in mouse.text("Gfap")


def test_compose_card_is_kbfm_text_from_facts():
    text = compose_card("X1", None, "lncRNA", None, None)
    assert text == "X1, a long non-coding RNA gene."


def test_marker_sets_combine_curated_and_consensus():
    sets = marker_sets(cell_types=["B cell", "astrocyte"])
    assert sets["CL:0000236"][:2] == ["MS4A1", "CD79A"]  # curated first
    assert len(sets["CL:0000236"]) == 20
    assert sets["CL:0000127"][0] == "GFAP"
    assert len(marker_sets(source="curated")) == 47
    assert len(marker_sets()) >= 1375
    mouse = marker_sets("mouse", cell_types=["microglial cell"])["CL:0000129"]
    assert "P2ry12" in mouse
    with pytest.raises(KbfmInputError, match="marker source"):
        marker_sets(source="panglao")


# --- hash pinning and the restricted unpickler ----------------------------------------


def test_tampered_knowledge_file_is_refused(tmp_path):
    real = package_file("cellconsensus", "data/consensus_cache_full.pkl")
    copy = tmp_path / "consensus_cache_full.pkl"
    shutil.copyfile(real, copy)
    with copy.open("r+b") as fh:
        fh.seek(1000)
        byte = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    pinned = "572046bc2f1724fc074714d0bf67450cc7aa5ac1c3299dbb30dcf34ec51d7980"
    with pytest.raises(KbfmInputError, match=r"consensus_cache_full\.pkl.*refusing"):
        load_verified_pickle(copy, pinned)


def test_restricted_unpickler_refuses_code(tmp_path):
    import hashlib
    import os

    evil = pickle.dumps(os.getcwd)  # a pickle that names a callable outside the list
    path = tmp_path / "evil.pkl"
    path.write_bytes(evil)
    sha = hashlib.sha256(evil).hexdigest()
    with pytest.raises(KbfmInputError, match="refusing to unpickle global"):
        load_verified_pickle(path, sha, PANDAS_TABLE_GLOBALS)


# --- species ------------------------------------------------------------------------


def test_species_detection():
    assert detect_species(["Gfap", "Snap25", "Cd3e", "1700020N01Rik"]) == "mouse"
    assert detect_species(["GFAP", "SNAP25", "HLA-DRA"]) == "human"
    assert detect_species(["ENSMUSG00000020932", "ENSMUSG00000027273"]) == "mouse"
    with pytest.raises(KbfmInputError, match="species='human'"):
        detect_species(["1", "2", "x"])


def test_mouse_genes_reach_human_only_knowledge_through_orthologs(minilm):
    from kbfm.knowledge._gene_vectors import gene_vectors

    human_only = GeneKnowledge(
        {"GFAP": "An astrocyte intermediate filament.", "CD3E": "A T cell receptor part."},
        source="mine",
        species="human",
    )
    vectors = gene_vectors(["Gfap", "Cd3e", "Xist"], source=human_only, encoder=minilm)
    assert vectors.has_knowledge.tolist() == [True, True, False]
    assert vectors.provenance["species"] == "mouse"
    assert vectors.provenance["knowledge_species"] == "human"
    assert vectors.report.how["Gfap"] == "ortholog"


# --- candidates ------------------------------------------------------------------------


def test_branch_gives_knowledge_bearing_descendants(ontology):
    neurons = resolve_candidates("neuron", ontology)
    assert len(neurons.ids) > 20  # was 3 with the curated table alone
    labels = {ontology.term(i).label for i in neurons.ids}
    assert {"GABAergic neuron", "glutamatergic neuron"} <= labels
    glia = resolve_candidates("glial cell", ontology, "mouse")
    assert ontology.term("astrocyte").id in glia.ids


def test_unknown_branch_suggests_close_labels(ontology):
    with pytest.raises(KbfmInputError, match=r"Did you mean.*neuron"):
        resolve_candidates("neuronn", ontology)


def test_branch_without_knowledge_is_a_clear_error(ontology):
    with pytest.raises(KbfmInputError, match="No cell type under 'sperm'"):
        resolve_candidates("sperm", ontology)


def test_auto_candidates_from_tissue(ontology):
    brain = resolve_candidates("auto", ontology, tissue="brain")
    assert brain.lineages == list(TISSUE_LINEAGES["brain"])
    assert ontology.term("astrocyte").id in brain.ids
    assert ontology.term("B cell").id not in brain.ids


# --- annotate end to end -------------------------------------------------------------


def _brain_counts(species: str = "mouse", n: int = 40) -> sc.AnnData:
    """Counts where astrocytes, oligodendrocytes and neurons express their markers."""
    onto = CellOntology.load()
    types = ["astrocyte", "oligodendrocyte", "GABAergic neuron", "endothelial cell"]
    ids = [onto.term(t).id for t in types]
    markers = marker_sets(species, cell_types=ids)
    adata = kbfm.datasets.synthetic_expression({c: markers[c] for c in ids}, n_cells_per_type=n)
    if species == "mouse":  # background genes spelled as mouse symbols (no knowledge)
        adata.var_names = [g.replace("GENE", "Bgene") for g in adata.var_names]
    return adata


def test_annotate_auto_on_mouse_brain_counts(caplog):
    adata = _brain_counts("mouse")
    with caplog.at_level(logging.INFO, logger="kbfm"):
        kbfm.tl.annotate(adata, groupby="auto")
    record = adata.uns["kbfm"]["annotate"]
    assert record["species"] == "mouse"
    assert "neural" in record["candidate_lineages"]
    assert "log-normalised here" in record["expression"]  # counts were log-normalised
    n_markers = sum(not g.startswith("Bgene") for g in adata.var_names)
    assert record["n_genes_with_knowledge"] >= n_markers
    result = kbfm.tl.evaluate_annotation(
        adata.obs["cell_type"].astype(str), adata.obs["kbfm_celltype_id"].astype(str)
    )
    assert result["ontology_accuracy"] >= 0.7
    messages = " ".join(r.message for r in caplog.records)
    assert "candidate cell types" in messages and "genes carry knowledge" in messages


def test_low_knowledge_coverage_warns(caplog):
    adata = _brain_counts("human", n=15)
    import scipy.sparse as sp

    noise = np.random.default_rng(0).poisson(1, (adata.n_obs, 400)).astype(float)
    merged = sc.AnnData(sp.hstack([adata.X, sp.csr_matrix(noise)]).tocsr(), obs=adata.obs)
    merged.var_names = [*adata.var_names, *(f"NOTAGENE{i}" for i in range(400))]
    with caplog.at_level(logging.WARNING, logger="kbfm"):
        kbfm.tl.annotate(merged, candidates=["astrocyte", "oligodendrocyte"], species="human")
    assert any("carry knowledge" in r.message for r in caplog.records)


def test_annotate_after_pearson_residuals_uses_counts():
    adata = _brain_counts("human", n=20)
    kbfm.pp.normalize(adata, method="pearson")
    assert adata.X.min() < 0
    kbfm.tl.annotate(adata, candidates="auto", tissue="brain", groupby="auto")
    assert "counts" in adata.uns["kbfm"]["annotate"]["expression"]
    assert adata.obs["kbfm_celltype"].notna().all()


def test_embed_cells_does_not_reuse_gene_text_of_another_source(minilm):
    adata = _brain_counts("human", n=5)
    kbfm.tl.embed_genes(adata, source="builtin", encoder=minilm)
    kbfm.tl.embed_cells(adata, source="atlas", encoder=minilm)
    made = adata.uns["kbfm"]["embed_cells"]
    assert made["knowledge_source"] == "atlas"
    kbfm.tl.embed_cells(adata, encoder=minilm)  # no source: reuse what embed_genes made
    assert adata.uns["kbfm"]["embed_cells"]["gene_embeddings"].startswith("adata.varm")


def test_zero_shot_deconvolution_beyond_blood():
    ref = _brain_counts("mouse", n=10)
    spots = sc.AnnData(ref.X[:20] + ref.X[20:40])  # astrocyte + oligodendrocyte mixtures
    spots.var_names = ref.var_names
    kbfm.tl.deconvolve(
        spots, method="knowledge", cell_types=["astrocyte", "oligodendrocyte", "neuron"]
    )
    props = spots.obsm["kbfm_proportions"]
    assert props.shape == (20, 3)
    assert np.allclose(np.asarray(props).sum(axis=1), 1, atol=1e-4)
    assert np.asarray(props)[:, 2].mean() < 0.34  # no neuron markers in these spots


def test_zero_shot_deconvolution_borrows_markers_for_unmeasured_types():
    ref = _brain_counts("mouse", n=10)
    spots = sc.AnnData(ref.X[:20] + ref.X[20:40])
    spots.var_names = ref.var_names
    # No marker list of its own in the knowledge: takes its hippocampal-neuron ancestor's.
    kbfm.tl.deconvolve(
        spots, method="knowledge", cell_types=["astrocyte", "dentate gyrus granule cell"]
    )
    origin = spots.uns["kbfm"]["deconvolve"]["marker_origin"]
    assert origin["dentate gyrus granule cell"].startswith("ancestor")
    assert spots.obsm["kbfm_proportions"].shape == (20, 2)


def test_marker_facts_refuse_an_unknown_species():
    from kbfm.knowledge.retrieval import marker_facts

    assert marker_facts(["MS4A1"])["MS4A1"][0] == "B cell"
    with pytest.raises(KbfmInputError, match="species must be one of"):
        marker_facts(["GFAP"], "rat")
