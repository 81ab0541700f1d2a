"""The offline end-to-end demo writes its files with honest metrics."""

from __future__ import annotations

import json

import pytest

from kbfm.demo import run_demo


@pytest.mark.slow
def test_demo_writes_results(tmp_path):
    metrics = run_demo(tmp_path)
    for name in (
        "demo.h5ad",
        "metrics.json",
        "report.md",
        "umap_truth_vs_prediction.png",
        "genetext_umap.png",
        "query.png",
        "spatial_domains.png",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    for key in ("zero_shot", "baseline_marker_score"):
        assert 0.0 <= saved[key]["accuracy"] <= 1.0
        assert 0.0 <= saved[key]["macro_f1"] <= 1.0
    # both are far better than chance over ~20 candidate types
    assert saved["zero_shot"]["accuracy"] > 0.2
    assert saved["baseline_marker_score"]["accuracy"] > 0.2
    assert saved["spatial_domains"]["ari"] > 0.8  # generated layers are recovered
