"""`kbfm predict-expression`: --genes, scoring a --predict slide, --save-model / --model."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import typer
from typer.testing import CliRunner

from kbfm.cli.image import predict_expression_cmd
from kbfm.im.predict_expression import ExpressionPredictor
from kbfm.io.h5ad import read_h5ad, write_h5ad

app = typer.Typer()
app.command("predict-expression")(predict_expression_cmd)
app.command("unused")(lambda: None)  # two commands: typer keeps the command name


def _slide(seed: int, n_side: int = 7) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    grid = np.array([[x, y] for x in range(n_side) for y in range(n_side)], float) * 100
    n = len(grid)
    emb = rng.normal(size=(n, 10)).astype(np.float32)
    texture = rng.normal(loc=3.0, size=(n, 3)).astype(np.float32)
    rates = np.column_stack([np.exp(3.0 + 0.9 * emb[:, 0]), np.full((n, 5), 30.0)])
    slide = ad.AnnData(rng.poisson(rates).astype(np.float32))
    slide.var_names = ["SIG", "A", "B", "C", "D", "E"]
    slide.obs_names = [f"s{i}" for i in range(n)]
    slide.obsm["X_image"], slide.obsm["X_ct"], slide.obsm["spatial"] = emb, texture, grid
    return slide


def _files(tmp_path):
    train = [write_h5ad(_slide(k), tmp_path / f"sec{k}.h5ad") for k in range(3)]
    new = write_h5ad(_slide(7), tmp_path / "new.h5ad")
    return train, new


def test_genes_from_a_list_and_a_file_and_unknown_genes(tmp_path):
    train, _new = _files(tmp_path)
    runner = CliRunner()
    base = ["predict-expression", *map(str, train), "--n-pcs", "8"]
    result = runner.invoke(app, [*base, "-d", str(tmp_path / "r1"), "--genes", "SIG,B"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "r1" / "summary.json").read_text())
    assert summary["gene_selection"] == "fixed (genes=)"
    assert all(g == ["SIG", "B"] for g in summary["genes_per_fold"].values())
    table = pd.read_csv(tmp_path / "r1" / "pearson_per_gene.csv", index_col=0)
    assert list(table.index) == ["SIG", "B"]
    listing = tmp_path / "genes.txt"
    listing.write_text("# my panel\nSIG\n\nC\n")
    result = runner.invoke(app, [*base, "-d", str(tmp_path / "r2"), "--genes", str(listing)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "r2" / "pearson_per_gene.csv", index_col=0)
    assert list(table.index) == ["SIG", "C"]
    result = runner.invoke(app, [*base, "-d", str(tmp_path / "r3"), "--genes", "SIG,NOPE,ZZZ"])
    assert result.exit_code == 2
    assert "2 of the --genes are not in the training files: NOPE, ZZZ" in result.output
    assert not (tmp_path / "r3").exists()  # refused before any fitting or writing


def test_predict_slide_with_counts_is_scored_and_model_round_trips(tmp_path):
    train, new = _files(tmp_path)
    runner = CliRunner()
    out, saved = tmp_path / "res", tmp_path / "model"
    args = [
        "predict-expression",
        *map(str, train),
        "-d",
        str(out),
        "--use-rep",
        "X_image,X_ct",
        "--neighbour-rings",
        "1",
        "--n-pcs",
        "26",
        "--n-genes",
        "3",
        "--predict",
        str(new),
        "--save-model",
        str(saved),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    score = json.loads((out / "new.score.json").read_text())
    assert "new: mean Pearson r" in result.output
    assert f"{score['mean_r']:.3f}" in result.output
    per_gene = pd.read_csv(out / "new.pearson_per_gene.csv", index_col=0)["pearson_r"]
    assert score["n_genes_scored"] == len(per_gene) == 3
    assert np.isclose(score["mean_r"], per_gene.mean())
    assert per_gene["SIG"] > 0.5
    predicted = read_h5ad(out / "new.predicted.h5ad")
    first = predicted.obsm["kbfm_predicted_expression"]
    assert list(first.columns) == ExpressionPredictor.load(saved).genes
    assert "X_image_context" not in predicted.obsm  # the predictor builds its own features
    # the saved predictor gives the same predictions without the training files
    again = tmp_path / "again"
    args = ["predict-expression", "--model", str(saved), "--predict", str(new), "-d", str(again)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    second = read_h5ad(again / "new.predicted.h5ad").obsm["kbfm_predicted_expression"]
    np.testing.assert_array_equal(first.to_numpy(), second.to_numpy())
    assert json.loads((again / "new.score.json").read_text()) == score
    assert read_h5ad(new).obsm.keys() == _slide(7).obsm.keys()  # the input is untouched


def test_image_only_slide_is_predicted_not_scored(tmp_path):
    train, _new = _files(tmp_path)
    image_only = _slide(9)
    image_only.X = np.zeros_like(image_only.X)
    path = write_h5ad(image_only, tmp_path / "imageonly.h5ad")
    out = tmp_path / "res"
    args = ["predict-expression", *map(str, train), "--out-dir", str(out), "--n-pcs", "8"]
    result = CliRunner().invoke(app, [*args, "--predict", str(path)])
    assert result.exit_code == 0, result.output
    assert "imageonly: not scored" in result.output
    assert (out / "imageonly.predicted.h5ad").exists()
    assert not (out / "imageonly.score.json").exists()


def test_model_option_errors(tmp_path):
    train, new = _files(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["predict-expression", "--model", str(tmp_path)])
    assert result.exit_code == 2 and "--predict" in result.output
    args = ["predict-expression", "--model", str(tmp_path), "--predict", str(new)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "not a saved expression predictor" in result.output
    result = runner.invoke(app, ["predict-expression", "-d", str(tmp_path / "x")])
    assert result.exit_code == 2 and "training .h5ad" in result.output
    # a --predict output that would replace an input is refused
    clash = write_h5ad(_slide(3), tmp_path / "new.predicted.h5ad")
    args = ["predict-expression", str(clash), str(train[0]), "--predict", str(new)]
    result = runner.invoke(app, [*args, "-d", str(tmp_path)])
    assert result.exit_code == 2 and "is an input" in result.output
