"""The kbfm command line on small .h5ad files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import kbfm
from kbfm.cli import app

runner = CliRunner()


def test_info_lists_offline_default():
    result = runner.invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    default = [r for r in info["text_encoders"] if r["default"]]
    assert default[0]["name"] == "minilm" and default[0]["offline"] is True


def test_embed_annotate_query_roundtrip(tmp_path):
    adata = kbfm.datasets.pbmc68k_reduced()[:120].copy()
    path = tmp_path / "pbmc.h5ad"
    adata.write_h5ad(path)
    before = path.read_bytes()
    out = tmp_path / "pbmc.kbfm.h5ad"  # the default output; later commands update it
    for args in (
        ["embed-genes", str(path)],
        ["embed-cells", str(out), "--weighting", "relative"],
        ["annotate", str(out), "--candidates", "leukocyte", "--groupby", "auto"],
        ["query", str(out), "B cell", "--key", "b_like"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    done = kbfm.io.read_h5ad(out)
    assert done.obsm["X_genetext"].shape == (120, 384)
    assert {"kbfm_celltype", "kbfm_celltype_id", "kbfm_celltype_score", "b_like"} <= set(done.obs)
    assert np.isfinite(done.obs["b_like"]).all()
    assert set(done.uns["kbfm"]["history"]) >= {"embed_genes", "embed_cells", "annotate"}
    assert not list(tmp_path.glob(".*h5ad"))  # no temporary files left behind
    assert path.read_bytes() == before  # the user's file was never overwritten
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pbmc.h5ad", "pbmc.kbfm.h5ad"]


def test_output_path_rule():
    from pathlib import Path

    from kbfm.cli._common import output_path

    assert output_path(Path("d/x.h5ad"), None) == Path("d/x.kbfm.h5ad")
    assert output_path(Path("d/x.kbfm.h5ad"), None) == Path("d/x.kbfm.h5ad")
    assert output_path(Path("d/x.h5ad"), Path("d/x.h5ad")) == Path("d/x.h5ad")  # explicit
    assert output_path(Path("visium_folder"), None) == Path("visium_folder.kbfm.h5ad")


def test_unknown_encoder_is_a_clean_error(tmp_path):
    path = tmp_path / "x.h5ad"
    kbfm.datasets.pbmc68k_reduced()[:10].copy().write_h5ad(path)
    result = runner.invoke(app, ["embed-genes", str(path), "--encoder", "no-such-model"])
    assert result.exit_code == 2
    assert "Unknown text encoder 'no-such-model'" in result.output


def test_missing_file_is_a_clean_error(tmp_path):
    result = runner.invoke(app, ["embed-cells", str(tmp_path / "missing.h5ad")])
    assert result.exit_code == 2 and "No such .h5ad file" in result.output


def test_info_lists_image_encoders_and_llms():
    info = json.loads(runner.invoke(app, ["info", "--json"]).output)
    image_default = next(r for r in info["image_encoders"] if r["default"])
    assert image_default["name"] == "efficientnet_lite0" and image_default["offline"]
    assert {r["name"] for r in info["llms"]} >= {"smollm2", "dry-run"}


def test_progress_can_be_switched_off_from_the_environment(monkeypatch):
    from kbfm._settings import KbfmSettings

    monkeypatch.setenv("KBFM_PROGRESS", "0")
    assert KbfmSettings().progress is False
    monkeypatch.setenv("KBFM_PROGRESS", "1")
    assert KbfmSettings().progress is True


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('{"run_qc": {}}', "must hold a JSON list"),
        ('[["run_qc"]]', "step 1 is"),
        ('[["run_qc", {}], [3, {}]]', "step 2 is"),
        (None, "--plan file not found"),
    ],
)
def test_malformed_plan_files_are_clean_errors(tmp_path, content, message):
    plan = tmp_path / "plan.json"
    if content is not None:
        plan.write_text(content)
    result = runner.invoke(app, ["ask", "q", "--plan", str(plan), "--out-dir", str(tmp_path / "a")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
