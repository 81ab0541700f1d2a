"""Tutorials in notebooks/ run end to end (they are the documentation's examples).

Tutorials that read the shared public data (``$KBFM_DATA``, else ``<repo>/../shared/data``)
skip with the missing path when it is absent. Figures go to a per-test temporary folder
(``$KBFM_TUTORIAL_OUT``).
"""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
from _paths import SHARED

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.py"))

# notebook file name -> shared-data paths it reads
NEEDS_SHARED = {
    "02_annotation_tissues.py": [
        "deconv/spacexr/Reference/Visium_Lymph_Ref/ref_downsampled.h5ad",
        "deconv/spacexr/Reference/Visium_Ref/counts.csv",
    ],
    "03_histology_expression.py": ["histology/her2st/cnts/C2.tsv.gz", "histology/her2st/imgs"],
    "05_deconvolution.py": [
        "deconv/spacexr/Reference/Visium_Lymph_Ref/ref_downsampled.h5ad",
        "deconv/spacexr/SpatialRNA/VisiumLymphVignette/visium_lymph.h5ad",
    ],
}


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, monkeypatch, tmp_path):
    missing = [p for p in NEEDS_SHARED.get(path.name, []) if not (SHARED / p).exists()]
    if missing:
        pytest.skip(
            f"{path.name} needs shared data: {SHARED / missing[0]} not found (set KBFM_DATA)"
        )
    monkeypatch.chdir(path.parent)
    monkeypatch.setenv("KBFM_DATA", str(SHARED))
    monkeypatch.setenv("KBFM_TUTORIAL_OUT", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = runpy.run_path(str(path), run_name="__main__")
    assert "adata" in namespace
    assert namespace["adata"].uns["kbfm"]["history"]
    if path.name != "01_zero_shot_annotation.py":
        assert list(tmp_path.rglob("*.png")), f"{path.name} saved no figure"
