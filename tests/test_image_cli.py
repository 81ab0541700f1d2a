"""`kbfm embed-image` / `kbfm predict-expression` command functions (registered by kbfm.cli)."""

from __future__ import annotations

import json

import pytest
import typer
from _histology import spots_adata, texture_image, write_pyramid
from typer.testing import CliRunner

from kbfm.cli.image import embed_image_cmd, predict_expression_cmd
from kbfm.io.h5ad import read_h5ad, write_h5ad

app = typer.Typer()
app.command("embed-image")(embed_image_cmd)
app.command("predict-expression")(predict_expression_cmd)


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    return write_pyramid(tmp_path_factory.mktemp("slide") / "tex.tif", texture_image())


def test_embed_then_predict_across_files(slide, tmp_path):
    runner = CliRunner()
    adata = spots_adata(step=80)
    files = []
    for name in ("top", "bottom"):
        part = adata[adata.obs["section"] == name].copy()
        raw = write_h5ad(part, tmp_path / f"{name}.h5ad")
        args = ["embed-image", str(raw), "--slide", str(slide), "--model", "color-texture"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "obsm['X_image']" in result.output
        files.append(tmp_path / f"{name}.kbfm.h5ad")  # the default output; input untouched
        assert "X_image" not in read_h5ad(raw).obsm and "X_image" in read_h5ad(files[-1]).obsm
    raw_new = write_h5ad(spots_adata(step=200, seed=2), tmp_path / "new.h5ad")
    args = ["embed-image", str(raw_new), "--slide", str(slide), "--model", "color-texture"]
    runner.invoke(app, args)
    new = tmp_path / "new.kbfm.h5ad"
    out = tmp_path / "res"
    args = ["predict-expression", *map(str, files), "-d", str(out), "--n-genes", "3"]
    result = runner.invoke(app, [*args, "--predict", str(new)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["mean_r"]) == {"top", "bottom"}
    assert (out / "pearson_per_gene.csv").exists()
    predicted = read_h5ad(out / "new.predicted.h5ad")
    assert predicted.obsm["kbfm_predicted_expression"].shape[1] == 3
    ring = tmp_path / "ring"
    args = [*args[:4], str(ring), *args[5:], "--neighbour-rings", "1", "--predict", str(new)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((ring / "summary.json").read_text())
    assert summary["use_rep"] == "X_image" and summary["neighbour_rings"] == 1
    widened = read_h5ad(ring / "new.predicted.h5ad")  # context built inside the predictor
    assert widened.uns["kbfm"]["predict_expression_new"]["rings"] == 1


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    result = CliRunner().invoke(app, ["embed-image", str(tmp_path / "x.tsv")])
    assert result.exit_code == 2
    assert "--out" in result.output


@pytest.mark.parametrize("bad", ["-1", "0", "nan"])
def test_bad_mpp_is_refused_before_reading(tmp_path, bad):
    missing = tmp_path / "not_read.h5ad"  # would fail later if the file were read first
    result = CliRunner().invoke(app, ["embed-image", str(missing), "--mpp", bad])
    assert result.exit_code == 2
    assert "--mpp must be a positive number of microns per pixel" in result.output
