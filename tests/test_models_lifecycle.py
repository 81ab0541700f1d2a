"""FusionModel's scvi-tools-style lifecycle: setup_anndata, construct, train, save, load."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import kbfm
from kbfm._errors import KbfmInputError
from kbfm.models import FusionModel

SETUP_KEY = "_kbfm_fusion_setup"


@pytest.fixture
def spatial():
    genes = list(kbfm.knowledge.marker_table()["gene"].drop_duplicates()[:120])
    return kbfm.datasets.synthetic_spatial(n_side=16, n_genes=120, gene_names=genes, seed=1)


def quick(model):
    return model.train(max_epochs=3, patience=3)


def test_setup_anndata_then_constructor_equals_setup(spatial):
    FusionModel.setup_anndata(spatial, n_top_genes=60)
    record = spatial.uns[SETUP_KEY]
    assert record["gene_selection"] == "spatial" and len(record["genes"]) == 60
    two_steps = quick(FusionModel(spatial, preset="tiny", seed=5))
    one_step = quick(FusionModel.setup(spatial.copy(), preset="tiny", n_top_genes=60, seed=5))
    assert two_steps.config == one_step.config
    np.testing.assert_array_equal(
        two_steps.get_latent_representation(), one_step.get_latent_representation()
    )


def test_setup_record_survives_h5ad(spatial, tmp_path):
    FusionModel.setup_anndata(spatial, n_top_genes=40, gene_selection="hvg")
    spatial.write_h5ad(tmp_path / "a.h5ad")
    back = kbfm.io.read_h5ad(tmp_path / "a.h5ad")
    a = FusionModel(spatial, preset="tiny").config
    b = FusionModel(back, preset="tiny").config
    assert a.genes == b.genes and a.gene_mean == b.gene_mean and a.gene_selection == "hvg"


def test_constructor_needs_a_current_setup(spatial):
    with pytest.raises(KbfmInputError, match=r"call FusionModel\.setup_anndata"):
        FusionModel(spatial, preset="tiny")
    FusionModel.setup_anndata(spatial, n_top_genes=40)
    with pytest.raises(KbfmInputError, match="computed on 256 spots, this data has 200"):
        FusionModel(spatial[:200].copy(), preset="tiny")
    genes = [str(g) for g in spatial.uns[SETUP_KEY]["genes"]]
    fewer = spatial[:, [g for g in spatial.var_names if g != genes[0]]].copy()
    with pytest.raises(KbfmInputError, match="1 of the 40 genes registered"):
        FusionModel(fewer, preset="tiny")


def test_objectives_as_names_or_weights(spatial):
    spatial.obsm["X_image"] = np.random.default_rng(0).normal(size=(spatial.n_obs, 8))
    FusionModel.setup_anndata(spatial, n_top_genes=40)
    cfg = FusionModel(spatial, preset="tiny", objectives=["reconstruction"]).config
    assert (cfg.w_reconstruction, cfg.w_contrastive, cfg.w_neighbour) == (1.0, 0.0, 0.0)
    cfg = FusionModel(spatial, preset="tiny", objectives={"contrastive": 0.5}).config
    assert (cfg.w_reconstruction, cfg.w_contrastive, cfg.w_neighbour) == (0.0, 0.5, 0.0)
    with pytest.raises(KbfmInputError, match="Unknown objectives \\['neighbor'\\]"):
        FusionModel(spatial, preset="tiny", objectives=["neighbor"])
    with pytest.raises(KbfmInputError, match="objectives\\['neighbour'\\] must be a number"):
        FusionModel(spatial, preset="tiny", objectives={"neighbour": -1})
    with pytest.raises(KbfmInputError, match="Unknown preset"):
        FusionModel(spatial, preset="huge")


def test_repr_shows_preset_views_and_training_state(spatial, tmp_path):
    spatial.obsm["X_image"] = np.random.default_rng(0).normal(size=(spatial.n_obs, 8))
    FusionModel.setup_anndata(spatial, n_top_genes=40)
    model = FusionModel(spatial, preset="tiny", objectives=["reconstruction", "neighbour"])
    text = repr(model)
    assert "preset 'tiny'" in text and "views: expression, X_image" in text
    assert "objectives: reconstruction 1, neighbour 1" in text and "not trained" in text
    quick(model)
    assert "3 epochs here in 1 train() call" in repr(model)
    model.save(tmp_path / "m")
    loaded = FusionModel.load(tmp_path / "m", spatial)
    assert f"loaded from {(tmp_path / 'm').resolve()} (3 epochs)" in repr(loaded)


def test_save_refuses_a_non_empty_folder_unless_overwrite(spatial, tmp_path):
    model = quick(FusionModel.setup(spatial, preset="tiny", n_top_genes=40))
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(KbfmInputError, match=r"already exists and is not empty \(\['notes.txt'\]"):
        model.save(tmp_path)
    model.save(tmp_path, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert {"config.json", "model.safetensors"} <= {p.name for p in tmp_path.iterdir()}
    with pytest.raises(KbfmInputError, match="it is a file, not a folder"):
        model.save(tmp_path / "notes.txt")
    model.save(tmp_path / "m")
    with pytest.warns(FutureWarning, match="a future version will refuse"):
        model.save(tmp_path / "m")


def test_gene_text_is_stored_once_and_old_folders_load(spatial, tmp_path):
    from safetensors.numpy import load_file

    model = quick(FusionModel.setup(spatial, preset="tiny", n_top_genes=40))
    model.save(tmp_path / "m")
    payload = json.loads((tmp_path / "m" / "config.json").read_text())
    assert "gene_text" not in payload and payload["format"] == 2
    np.testing.assert_array_equal(
        load_file(str(tmp_path / "m" / "model.safetensors"))["gene_text"], model.gene_text
    )
    # the format of earlier versions: a copy of the embeddings in config.json
    payload = {"config": payload["config"], "gene_text": model.gene_text.tolist()}
    (tmp_path / "m" / "config.json").write_text(json.dumps(payload))
    old = FusionModel.load(tmp_path / "m", spatial)
    np.testing.assert_array_equal(old.gene_text, model.gene_text)
    np.testing.assert_allclose(
        old.get_latent_representation(), model.get_latent_representation(), atol=1e-6
    )


def test_load_reports_or_refuses_missing_genes(spatial, tmp_path, caplog):
    model = quick(FusionModel.setup(spatial, preset="tiny", n_top_genes=40))
    model.save(tmp_path / "m")
    dropped = set(model.config.genes[:4])
    fewer = spatial[:, [g for g in spatial.var_names if g not in dropped]].copy()
    with caplog.at_level("WARNING", logger="kbfm"):
        FusionModel.load(tmp_path / "m", fewer)
    assert "4 of the model's 40 genes are missing" in caplog.text and "90.0% found" in caplog.text
    with pytest.raises(KbfmInputError, match=r"4 of the 40 genes .* \(90.0% found\)"):
        FusionModel.load(tmp_path / "m", fewer, allow_missing_genes=False)
    FusionModel.load(tmp_path / "m", spatial, allow_missing_genes=False)  # all present


def test_impute_method_is_what_tl_impute_stores(spatial):
    model = quick(FusionModel.setup(spatial, preset="tiny", n_top_genes=40))
    outside = [
        g for g in kbfm.knowledge.marker_table()["gene"].unique() if g not in spatial.var_names
    ][:1]
    genes = [model.config.genes[0], *outside]
    table = model.impute(genes)
    assert list(table.columns) == genes and (table.index == spatial.obs_names).all()
    kbfm.tl.impute(spatial, model, genes=genes)
    pd.testing.assert_frame_equal(spatial.obsm["kbfm_imputed"], table)
    with pytest.raises(KbfmInputError, match="genes must list at least one gene"):
        model.impute([])


def test_cli_train_refuses_a_used_model_dir_before_training(spatial, tmp_path):
    from typer.testing import CliRunner

    from kbfm.cli import app

    path = tmp_path / "spots.h5ad"
    spatial.write_h5ad(path)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "notes.txt").write_text("mine")
    args = ["train", str(path), "--model-dir", str(tmp_path / "model"), "--preset", "tiny"]
    refused = CliRunner().invoke(app, [*args, "--max-epochs", "2"])
    assert refused.exit_code == 2 and "already exists and is not empty" in refused.output
    assert not (tmp_path / "spots.kbfm.h5ad").exists()
    done = CliRunner().invoke(app, [*args, "--max-epochs", "2", "--overwrite"])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "model" / "model.safetensors").is_file()
