"""The QC report folder and the `kbfm qc` command function."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import scipy.sparse as sp
import typer
from test_pp_qc import make_spots
from typer.testing import CliRunner

from kbfm.cli.qc import qc_cmd
from kbfm.io import read_h5ad, write_h5ad
from kbfm.pl import write_qc_report
from kbfm.pp.auto_qc import auto_qc


def failing_spots():
    adata = make_spots()
    X = adata.X.toarray()
    X[[4, 40]] = np.floor(X[[4, 40]] * 0.05)
    adata.X = sp.csr_matrix(X)
    return adata


def test_report_folder_has_figures_table_and_reasons(tmp_path):
    adata = failing_spots()
    auto_qc(adata)
    report = write_qc_report(adata, tmp_path / "qc")
    text = report.read_text()
    assert "| low_counts |" in text
    assert "## Thresholds" in text
    for name in ("qc_metrics.png", "qc_spatial.png", "qc_table.csv"):
        assert (tmp_path / "qc" / name).stat().st_size > 0
    assert not list((tmp_path / "qc").glob(".*"))  # no temporary files left


def test_qc_command_writes_report_and_h5ad(tmp_path):
    path = write_h5ad(failing_spots(), tmp_path / "spots.h5ad")
    app = typer.Typer()
    app.command()(qc_cmd)
    result = CliRunner().invoke(
        app, [str(path), "--out-dir", str(tmp_path / "qc"), "--write-h5ad", "--remove"]
    )
    assert result.exit_code == 0, result.output
    assert "spots fail QC" in result.output
    out = read_h5ad(tmp_path / "spots.kbfm.h5ad")  # next to the input, never over it
    assert out.n_obs < 144
    assert out.obs["kbfm_qc_pass"].all()


def test_qc_command_reports_bad_input_in_one_line(tmp_path):
    adata = failing_spots()
    adata.X = adata.X.toarray() - 5.0
    path = write_h5ad(adata, tmp_path / "scaled.h5ad")
    app = typer.Typer()
    app.command()(qc_cmd)
    result = CliRunner().invoke(app, [str(path), "--out-dir", str(tmp_path / "qc")])
    assert result.exit_code == 2
    assert "scaled" in result.output


def test_qc_out_names_the_h5ad_and_out_dir_the_report(tmp_path):
    """--out means the data file, as in every data command; the report goes to --out-dir."""
    path = write_h5ad(failing_spots(), tmp_path / "spots.h5ad")
    app = typer.Typer()
    app.command()(qc_cmd)
    dest = tmp_path / "flagged.h5ad"
    result = CliRunner().invoke(
        app, [str(path), "--out-dir", str(tmp_path / "report"), "--out", str(dest)]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report" / "report.md").exists()
    assert "kbfm_qc_pass" in read_h5ad(dest).obs
    assert not (tmp_path / "spots.kbfm.h5ad").exists()
