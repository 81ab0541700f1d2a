"""FusionModel, domains and imputation on generated spatial data."""

from __future__ import annotations

import numpy as np
import pytest

import kbfm
from kbfm._errors import KbfmInputError
from kbfm.models import FusionModel

EPOCHS = 40


@pytest.fixture
def spatial():
    genes = list(kbfm.knowledge.marker_table()["gene"].drop_duplicates()[:120])
    return kbfm.datasets.synthetic_spatial(n_side=16, n_genes=120, gene_names=genes, seed=1)


def trained(adata, **kw):
    model = FusionModel.setup(adata, preset="tiny", n_top_genes=80, **kw)
    return model.train(max_epochs=EPOCHS, patience=EPOCHS)


def test_same_seed_same_embedding(spatial):
    a = trained(spatial, seed=3).get_latent_representation()
    b = trained(spatial, seed=3).get_latent_representation()
    c = trained(spatial, seed=4).get_latent_representation()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_domains_recover_the_bands(spatial):
    model = trained(spatial)
    model.to_adata()
    kbfm.tl.domains(spatial, n_domains=4, smooth=True)
    assert kbfm.tl.evaluate_domains(spatial, "domain")["ari"] > 0.9
    assert spatial.uns["kbfm"]["fusion_model"]["preset"] == "tiny"


def test_domains_options_and_bad_values(spatial):
    model = trained(spatial)
    model.to_adata()
    for covariance in ("tied", "full"):
        kbfm.tl.domains(spatial, n_domains=4, covariance=covariance, n_init=3, key_added="d")
        assert kbfm.tl.evaluate_domains(spatial, "domain", key="d")["ari"] > 0.8
    step = spatial.uns["kbfm"]["domains"]
    assert step["covariance"] == "full" and step["n_init"] == 3
    with pytest.raises(KbfmInputError, match="n_init must be at least 1"):
        kbfm.tl.domains(spatial, n_domains=4, n_init=0)
    with pytest.raises(KbfmInputError, match="covariance must be"):
        kbfm.tl.domains(spatial, n_domains=4, covariance="EEE")


def test_save_load_roundtrip_and_gene_alignment(spatial, tmp_path, caplog):
    model = trained(spatial)
    model.save(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"config.json", "model.safetensors"}
    again = FusionModel.load(tmp_path / "m", spatial)
    np.testing.assert_allclose(
        again.get_latent_representation(), model.get_latent_representation(), atol=1e-6
    )
    dropped = model.config.genes[:5]
    fewer = spatial[:, [g for g in spatial.var_names if g not in dropped]].copy()
    with caplog.at_level("WARNING", logger="kbfm"):
        partial = FusionModel.load(tmp_path / "m", fewer)
    assert partial.missing_genes == dropped and "5 of the model's" in caplog.text


def test_loading_bad_folders_is_refused(spatial, tmp_path):
    with pytest.raises(KbfmInputError, match="not a saved FusionModel"):
        FusionModel.load(tmp_path, spatial)
    model = trained(spatial)
    model.save(tmp_path / "m")
    big = FusionModel.setup(spatial, preset="base", n_top_genes=80).train(max_epochs=1)
    big.save(tmp_path / "big")
    (tmp_path / "m" / "model.safetensors").write_bytes(
        (tmp_path / "big" / "model.safetensors").read_bytes()
    )
    with pytest.raises(KbfmInputError, match="do not fit the saved config"):
        FusionModel.load(tmp_path / "m", spatial)


@pytest.mark.parametrize(
    ("weights", "expected_terms"),
    [
        ({"w_neighbour": 0.0, "w_contrastive": 0.0}, {"reconstruction"}),
        ({"w_neighbour": 1.0, "w_contrastive": 0.0}, {"reconstruction", "neighbour"}),
        ({"w_neighbour": 0.0, "w_contrastive": 1.0}, {"reconstruction", "contrastive"}),
        (
            {"w_neighbour": 1.0, "w_contrastive": 1.0, "w_reconstruction": 0.0},
            {"reconstruction", "neighbour", "contrastive"},
        ),
    ],
)
def test_objective_switches(spatial, weights, expected_terms):
    rng = np.random.default_rng(0)
    spatial.obsm["X_image"] = rng.normal(size=(spatial.n_obs, 10)).astype(np.float32)
    model = trained(spatial, **weights)
    last = model.history[-1]
    assert {
        k for k in ("reconstruction", "neighbour", "contrastive") if k in last
    } == expected_terms
    assert np.isfinite(model.get_latent_representation()).all()


def test_bad_inputs(spatial):
    no_space = spatial.copy()
    del no_space.obsm["spatial"]
    with pytest.raises(KbfmInputError, match="needs obsm\\['spatial'\\]"):
        FusionModel.setup(no_space, preset="tiny")
    FusionModel.setup(no_space, preset="tiny", w_neighbour=0.0)  # fine without the objective
    with pytest.raises(KbfmInputError, match="at least 20 spots"):
        FusionModel.setup(spatial[:10].copy(), preset="tiny")
    bad = spatial.copy()
    bad.obsm["X_image"] = np.full((bad.n_obs, 4), np.nan, dtype=np.float32)
    with pytest.raises(KbfmInputError, match="NaN"):
        FusionModel.setup(bad, preset="tiny")
    with pytest.raises(KbfmInputError, match="Unknown preset"):
        FusionModel.setup(spatial, preset="huge")


def test_impute_measured_and_knowledge_only_genes(spatial):
    panel_gene = "CD3E" if "CD3E" in spatial.var_names else spatial.var_names[0]
    outside = [
        g for g in kbfm.knowledge.marker_table()["gene"].unique() if g not in spatial.var_names
    ][:2]
    model = trained(spatial)
    kbfm.tl.impute(spatial, model, genes=[panel_gene, *outside])
    table = spatial.obsm["kbfm_imputed"]
    assert list(table.columns) == [panel_gene, *outside] and np.isfinite(table.to_numpy()).all()
    record = spatial.uns["kbfm"]["impute"]
    assert record["predicted_from_knowledge"] == outside
    with pytest.raises(KbfmInputError, match="NOT_A_GENE_XYZ"):
        kbfm.tl.impute(spatial, model, genes=["NOT_A_GENE_XYZ"])


def test_cli_train_domains_impute(spatial, tmp_path):
    from typer.testing import CliRunner

    from kbfm.cli import app

    spatial.write_h5ad(tmp_path / "spots.h5ad")
    path = tmp_path / "spots.kbfm.h5ad"  # each command updates kbfm's own output
    spatial.write_h5ad(path)
    runner = CliRunner()
    steps = [
        [
            "train",
            str(path),
            "--model-dir",
            str(tmp_path / "model"),
            "--preset",
            "tiny",
            "--max-epochs",
            "30",
        ],
        ["domains", str(path), "--n-domains", "4", "--smooth", "--label-key", "domain"],
        [
            "impute",
            str(path),
            "--model-dir",
            str(tmp_path / "model"),
            "--genes",
            spatial.var_names[0],
        ],
    ]
    for args in steps:
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    done = kbfm.io.read_h5ad(path)
    assert {"X_kbfm", "kbfm_imputed"} <= set(done.obsm) and "kbfm_domain" in done.obs


def test_gene_selection_spatial_by_default_when_coordinates_exist(spatial):
    model = FusionModel.setup(spatial, preset="tiny", n_top_genes=30)
    assert model.config.gene_selection == "spatial"
    # the band markers (first 32 genes) are what varies in space
    assert len(set(model.config.genes) & set(spatial.var_names[:32])) >= 28
    hvg = FusionModel.setup(spatial, preset="tiny", n_top_genes=30, gene_selection="hvg")
    assert hvg.config.gene_selection == "hvg"
    flat = spatial.copy()
    del flat.obsm["spatial"]
    assert FusionModel.setup(flat, preset="tiny", w_neighbour=0).config.gene_selection == "hvg"
    with pytest.raises(KbfmInputError, match="gene_selection='spatial' needs"):
        FusionModel.setup(flat, preset="tiny", w_neighbour=0, gene_selection="spatial")
    with pytest.raises(KbfmInputError, match="gene_selection must be"):
        FusionModel.setup(spatial, preset="tiny", gene_selection="moran")


def test_minibatch_training_is_deterministic_and_recovers_the_bands(spatial):
    def run(seed):
        model = FusionModel.setup(spatial, preset="tiny", n_top_genes=80, seed=seed)
        return model.train(batch_size=64, max_epochs=8, patience=8)

    a, b, c = run(3), run(3), run(4)
    assert a.history[0]["steps"] > 1 and a.batch_size == 64
    np.testing.assert_array_equal(a.get_latent_representation(), b.get_latent_representation())
    assert not np.allclose(a.get_latent_representation(), c.get_latent_representation())
    a.to_adata()
    kbfm.tl.domains(spatial, n_domains=4, smooth=True)
    assert kbfm.tl.evaluate_domains(spatial, "domain")["ari"] > 0.8
    assert spatial.uns["kbfm"]["fusion_model"]["batch_size"] == 64


def test_train_continues_from_current_weights_unless_reset(spatial):
    model = FusionModel.setup(spatial, preset="tiny", n_top_genes=80, seed=2)
    model.train(max_epochs=6, patience=6)
    model.train(max_epochs=3, patience=3)
    assert [h["epoch"] for h in model.history] == list(range(9))
    assert [h["round"] for h in model.history] == [0] * 6 + [1] * 3
    # the second call starts where the first stopped, not from a fresh initialisation
    assert model.history[6]["val_reconstruction"] < model.history[0]["val_reconstruction"]
    model.train(max_epochs=3, patience=3, reset=True)
    fresh = FusionModel.setup(spatial, preset="tiny", n_top_genes=80, seed=2)
    fresh.train(max_epochs=3, patience=3)
    assert len(model.history) == 3
    np.testing.assert_array_equal(
        model.get_latent_representation(), fresh.get_latent_representation()
    )


@pytest.mark.parametrize("encoder", ["mlp", "gcn"])
def test_streamed_inference_equals_all_at_once(spatial, encoder):
    model = trained(spatial, encoder=encoder)
    assert model.module.receptive_hops == 2 + (encoder == "gcn")
    whole = model.get_latent_representation(batch_size=None)
    for chunk in (17, 50, 10_000):
        streamed = model.get_latent_representation(batch_size=chunk)
        np.testing.assert_allclose(streamed, whole, atol=1e-5)
    flat = spatial.copy()
    del flat.obsm["spatial"]
    no_graph = FusionModel.setup(flat, preset="tiny", n_top_genes=80, w_neighbour=0.0)
    no_graph.train(max_epochs=3)
    np.testing.assert_allclose(
        no_graph.get_latent_representation(batch_size=40),
        no_graph.get_latent_representation(batch_size=None),
        atol=1e-5,
    )


def test_batch_size_larger_than_data_and_bad_values(spatial):
    model = FusionModel.setup(spatial, preset="tiny", n_top_genes=80)
    model.train(batch_size=10 * spatial.n_obs, max_epochs=2)
    assert model.batch_size is None and model.history[0]["steps"] == 1
    for bad in (0, 1, "big", 2.5, True):
        with pytest.raises(KbfmInputError, match="batch_size must be"):
            model.train(batch_size=bad, max_epochs=1)


def test_spot_graph_is_stored_in_obsp_and_reused(spatial):
    import scipy.sparse as sp

    model = FusionModel.setup(spatial, preset="tiny", n_top_genes=80)
    graph = spatial.obsp["spatial_connectivities"]
    assert sp.issparse(graph) and graph.shape == (spatial.n_obs, spatial.n_obs)
    assert "spatial_connectivities" in model.graph_source
    np.testing.assert_allclose(np.asarray(model.adjacency.sum(1)).ravel(), 1.0, rtol=1e-5)
    # a graph the user built (here: 4-neighbour grid) is reused as it is, not rebuilt
    own = spatial.copy()
    own.obsp["spatial_connectivities"] = (
        kbfm.models.spatial_adjacency(own.obsm["spatial"], 4).astype(bool).astype(np.float32)
    )
    reused = FusionModel.setup(own, preset="tiny", n_top_genes=80)
    assert "reused" in reused.graph_source
    assert reused.adjacency.nnz < model.adjacency.nnz
    bad = spatial.copy()
    bad._obsp["spatial_connectivities"] = sp.eye(5, format="csr")  # bypass anndata's check
    with pytest.raises(KbfmInputError, match="does not match the 256 spots"):
        FusionModel.setup(bad, preset="tiny", n_top_genes=80)


def test_warns_when_few_genes_carry_knowledge(caplog):
    known = list(kbfm.knowledge.marker_table()["gene"].drop_duplicates()[:5])
    names = known + [f"UNKNOWN{i}" for i in range(115)]
    adata = kbfm.datasets.synthetic_spatial(n_side=10, n_genes=120, gene_names=names, seed=0)
    with caplog.at_level("WARNING", logger="kbfm"):
        FusionModel.setup(adata, preset="tiny", n_top_genes=120)
    assert "Only 5 of the model's 120 genes (4%) carry gene text" in caplog.text
    with pytest.raises(KbfmInputError, match="encoder must be one of"):
        FusionModel.setup(adata, preset="tiny", encoder="transformer")


def test_embed_a_new_slice_with_a_saved_model(spatial, tmp_path, caplog):
    import os

    from typer.testing import CliRunner

    from kbfm.cli import app

    model = trained(spatial)
    old_umask = os.umask(0o027)
    try:
        model.save(tmp_path / "m")
    finally:
        os.umask(old_umask)
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / "m" / name).stat().st_mode & 0o777 == 0o640  # the user's umask
    other = kbfm.datasets.synthetic_spatial(
        n_side=14, n_genes=120, gene_names=list(spatial.var_names), seed=7
    )
    with caplog.at_level("INFO", logger="kbfm"):
        FusionModel.embed(tmp_path / "m", other)
    assert other.obsm["X_kbfm"].shape == (other.n_obs, 16)
    assert "80 of its 80 genes found in this data" in caplog.text
    assert "scaled with the training slice's (256 spots) mean" in caplog.text
    step = other.uns["kbfm"]["fusion_model"]
    assert step["model_dir"] == str((tmp_path / "m").resolve())
    assert step["trained_on"]["n_spots"] == spatial.n_obs
    assert step["epochs"] == len(model.history) and step["epochs_on_this_data"] == 0
    path = tmp_path / "other.h5ad"
    other.write_h5ad(path)
    result = CliRunner().invoke(app, ["embed", str(path), "--model", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert "genes found in this data" in result.output
    assert "X_kbfm" in kbfm.io.read_h5ad(path).obsm
