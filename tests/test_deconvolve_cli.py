"""The `kbfm deconvolve` command function and the proportion maps."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pandas as pd
import typer
from test_deconvolve import make_pair
from typer.testing import CliRunner

from kbfm.cli.qc import deconvolve_cmd
from kbfm.io import read_h5ad, write_h5ad


def test_deconvolve_command_writes_proportions_table_and_figure(tmp_path):
    import numpy as np

    spots, reference, truth, _ = make_pair(n_spots=30)
    spots.obsm["spatial"] = np.random.default_rng(0).uniform(0, 100, (spots.n_obs, 2))
    sp_path = write_h5ad(spots, tmp_path / "spots.h5ad")
    ref_path = write_h5ad(reference, tmp_path / "ref.h5ad")
    app = typer.Typer()
    app.command()(deconvolve_cmd)
    args = [str(sp_path), "--reference", str(ref_path), "-o", str(tmp_path / "out.h5ad")]
    args += ["--n-epochs", "200", "--table", str(tmp_path / "p.csv")]
    args += ["--figure", str(tmp_path / "p.png")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = read_h5ad(tmp_path / "out.h5ad")
    assert out.obsm["kbfm_proportions"].shape == (30, 4)
    table = pd.read_csv(tmp_path / "p.csv", index_col=0)
    assert np.sqrt(((table.to_numpy() - truth) ** 2).mean()) < 0.08
    assert (tmp_path / "p.png").stat().st_size > 0


def test_deconvolve_command_bad_label_key(tmp_path):
    spots, reference, _, _ = make_pair(n_spots=10)
    sp_path = write_h5ad(spots, tmp_path / "spots.h5ad")
    ref_path = write_h5ad(reference, tmp_path / "ref.h5ad")
    app = typer.Typer()
    app.command()(deconvolve_cmd)
    result = CliRunner().invoke(
        app, [str(sp_path), "--reference", str(ref_path), "--label-key", "x"]
    )
    assert result.exit_code == 2
    assert "no obs['x'] column" in result.output


def test_deconvolve_command_refuses_an_option_of_another_method(tmp_path):
    app = typer.Typer()
    app.command()(deconvolve_cmd)
    missing = tmp_path / "never_read.h5ad"  # not there: the check comes before reading
    args = [str(missing), "--method", "nnls", "--n-epochs", "200", "--cell-types", "B cell"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "n_epochs=200 (method='poisson' or method='knowledge')" in result.output
    assert "cell_types=['B cell'] (method='knowledge')" in result.output
