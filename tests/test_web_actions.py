"""The web app's actions as plain functions: demo data, uploads, annotation, query, agent."""

from __future__ import annotations

import numpy as np
import pytest

import kbfm
from kbfm._errors import KbfmInputError
from kbfm.web import actions
from kbfm.web.demo_data import REGION_MARKERS, generated_lymph_node
from kbfm.web.session import SessionStore

LYMPH = "Lymph node section (generated, with H&E)"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The generated lymph node, embedded and with a UMAP (once for the module)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kbfm.settings, "cache_dir", tmp_path_factory.mktemp("web-cache"))
        mp.setattr(kbfm.settings, "progress", False)
        adata = actions.load_demo(LYMPH)
        steps = []
        actions.prepare(adata, progress=lambda f, d: steps.append((f, d)))
    assert steps[-1] == (1.0, "Ready") and len(steps) >= 3
    return adata


@pytest.fixture(scope="module")
def annotated(prepared, tmp_path_factory):
    adata = prepared.copy()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kbfm.settings, "cache_dir", tmp_path_factory.mktemp("web-cache-ann"))
        table = actions.annotate_clusters(adata)
    return adata, table


def test_generated_lymph_node_has_regions_markers_and_an_image():
    adata = generated_lymph_node()
    assert set(adata.obs["region"]) == set(REGION_MARKERS)
    lib = adata.uns["spatial"]["generated_lymph_node"]
    assert lib["images"]["hires"].shape == (1000, 1000, 3)
    b_spots = adata.obs["region"] == "B cell"
    ms4a1 = adata[:, "MS4A1"].X.ravel()
    assert ms4a1[b_spots].mean() > 3 * ms4a1[~b_spots].mean()
    assert np.array_equal(adata.X, generated_lymph_node().X)  # seeded


def test_prepare_adds_embedding_and_umap(prepared):
    assert prepared.obsm["X_genetext"].shape == (prepared.n_obs, 384)
    assert prepared.obsm["X_umap"].shape == (prepared.n_obs, 2)
    assert actions.color_options(prepared)[0] == "region"
    assert "spot coordinates and an H&E image" in actions.describe(prepared, LYMPH)


def test_unknown_demo_name_lists_the_choices():
    with pytest.raises(KbfmInputError, match="choose one of"):
        actions.load_demo("nope")


def test_corrupt_upload_is_refused_with_the_users_file_name(tmp_path):
    bad = tmp_path / "broken.h5ad"
    bad.write_bytes(b"this is not HDF5 at all" * 100)
    with pytest.raises(KbfmInputError, match=r"'mine\.h5ad' is not a readable \.h5ad file"):
        actions.read_upload(bad, max_mb=10, filename="mine.h5ad")


def test_upload_limits_and_suffix(tmp_path, prepared):
    path = tmp_path / "ok.h5ad"
    prepared[:50].copy().write_h5ad(path)
    with pytest.raises(KbfmInputError, match=r"over this server.s 0\.001 MB upload limit"):
        actions.read_upload(path, max_mb=0.001)
    with pytest.raises(KbfmInputError, match=r"not an \.h5ad file"):
        actions.read_upload(path, max_mb=10, filename="table.csv")
    (tmp_path / "empty.h5ad").write_bytes(b"")
    with pytest.raises(KbfmInputError, match="empty"):
        actions.read_upload(tmp_path / "empty.h5ad", max_mb=10)
    before = sorted(p.name for p in tmp_path.iterdir())
    adata = actions.read_upload(path, max_mb=10)
    assert adata.n_obs == 50 and "X_genetext" in adata.obsm
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written beside it


def test_annotation_table_names_terms_and_links(annotated):
    adata, table = annotated
    assert list(table.columns) == ["cluster", "cells", "cell type", "CL id", "score", "link"]
    assert table["cells"].sum() == adata.n_obs
    assert table["CL id"].str.match(r"^CL:\d{7}$").all()
    assert (table["link"] == [actions.OLS_URL.format(c) for c in table["CL id"]]).all()
    # the B-cell follicles and the capsule are named after what generated them
    biggest_b = adata.obs.loc[adata.obs["region"] == "B cell", "kbfm_celltype"].mode()[0]
    assert biggest_b == "B cell"
    capsule = adata.obs.loc[adata.obs["region"] == "fibroblast", "kbfm_celltype"].mode()[0]
    assert capsule == "fibroblast"
    html = actions.annotation_table_html(table)
    assert html.count("<tr>") == len(table) + 1
    assert 'href="https://www.ebi.ac.uk/ols4/ontologies/cl/classes?obo_id=CL:0000236"' in html


def test_candidates_typed_in_the_page():
    assert actions.parse_candidates("") == "auto"
    assert actions.parse_candidates("all") is None
    assert actions.parse_candidates("leukocyte") == "leukocyte"
    assert actions.parse_candidates("B cell, T cell,") == ["B cell", "T cell"]


def test_query_is_highest_where_its_cell_type_is(prepared):
    adata = prepared.copy()
    key = actions.query_tissue(adata, "plasma cell")
    assert key == "kbfm_query_plasma_cell"
    by_region = adata.obs.groupby("region", observed=True)[key].mean()
    assert by_region.idxmax() == "plasma cell"
    assert "Highest mean by `region`: plasma cell" in actions.query_summary(adata, key)
    with pytest.raises(KbfmInputError, match="Type a query"):
        actions.query_tissue(adata, "  ")


def test_figures_tissue_and_umap(prepared, tmp_path):
    tissue = actions.tissue_figure(prepared, "region")
    assert len(tissue.axes[0].images) == 1  # the H&E under the spots
    path = actions.save_figure(tissue, tmp_path / "tissue.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    umap = actions.umap_figure(prepared, "region")
    labels = [t.get_text() for t in umap.axes[0].get_legend().get_texts()]
    assert sorted(labels) == sorted(REGION_MARKERS)
    actions.save_figure(umap, tmp_path / "umap.png")
    with pytest.raises(KbfmInputError, match="No obs column 'nope'"):
        actions.tissue_figure(prepared, "nope")
    pbmc = kbfm.datasets.pbmc68k_reduced()
    with pytest.raises(KbfmInputError, match="no spot coordinates"):
        actions.tissue_figure(pbmc, "cell_type")


def test_domains_with_chosen_k(prepared):
    adata = prepared.copy()
    sizes = actions.find_domains(adata, 4)
    assert len(sizes) == adata.obs["kbfm_domain"].nunique() <= 4
    assert sizes["spots"].sum() == adata.n_obs
    assert adata.uns["kbfm"]["domains"]["use_rep"] == "X_genetext"
    with pytest.raises(KbfmInputError, match="between 2 and 30"):
        actions.find_domains(adata, 1)


def test_scripted_agent_transcript_step_by_step(prepared, tmp_path):
    assert "scripted plan (no language model: annotate, summarise, plot)" in (
        actions.agent_backends()
    )
    transcript = actions.ask_agent(
        prepared, "Which cell types are here?", backend="scripted", out_dir=tmp_path
    )
    assert [s.tool for s in transcript.steps] == [
        "annotate_cell_types",
        "summarize_column",
        "plot_spatial",
    ]
    assert all(s.ok for s in transcript.steps)
    assert "kbfm_celltype" not in prepared.obs  # the agent worked on a copy
    text = actions.transcript_markdown(transcript, folder=tmp_path)
    assert "#### Step 3: `plot_spatial` (ok)" in text and "**Answer:** Done." in text
    assert "> figure written to spatial_kbfm_celltype.png" in text and str(tmp_path) not in text
    assert (tmp_path / "transcript.md").is_file()
    assert (tmp_path / "spatial_kbfm_celltype.png").is_file()


def test_export_round_trips_results(annotated, tmp_path):
    adata, _ = annotated
    path = actions.export_h5ad(adata, tmp_path / "out.kbfm.h5ad")
    back = kbfm.io.read_h5ad(path)
    assert (back.obs["kbfm_celltype"] == adata.obs["kbfm_celltype"]).all()
    assert "generated_lymph_node" in back.uns["spatial"]


def test_sessions_have_private_folders_removed_at_close(tmp_path):
    store = SessionStore()
    one, two = store.new(), store.new()
    assert one.folder != two.folder and one.folder.parent == store.root
    one.path("../../escape.png").write_text("x")
    assert (one.folder / "escape.png").is_file()  # names cannot leave the folder
    store.close(one)
    assert not one.folder.exists() and two.folder.exists()
    store.close_all()
    assert not store.root.exists()


def test_page_handlers_report_errors_as_one_line_messages():
    gr = pytest.importorskip("gradio")
    from kbfm.web.app import shown_errors

    @shown_errors("Annotation")
    def bad_input():
        raise KbfmInputError("groupby='x' is not a column of adata.obs.")

    @shown_errors("Annotation")
    def crash():
        raise ZeroDivisionError("division by zero")

    with pytest.raises(gr.Error) as err:
        bad_input()
    assert err.value.message == "groupby='x' is not a column of adata.obs."
    with pytest.raises(gr.Error) as err:
        crash()
    assert err.value.message.startswith("Annotation failed: ZeroDivisionError: division by zero.")
    assert "Traceback" not in err.value.message


def test_serve_checks_its_options_before_starting():
    from typer.testing import CliRunner

    from kbfm.cli import app
    from kbfm.web import serve

    with pytest.raises(KbfmInputError, match="max_upload_mb must be positive"):
        serve(max_upload_mb=0, block=False)
    with pytest.raises(KbfmInputError, match="port must be between 1 and 65535"):
        serve(port=70000, block=False)
    result = CliRunner().invoke(app, ["serve", "--max-upload-mb", "-1"])
    assert result.exit_code == 2 and "max_upload_mb must be positive" in result.output
    help_text = CliRunner().invoke(app, ["serve", "--help"]).output
    assert "--max-upload-mb" in help_text and "127.0.0.1" in help_text
