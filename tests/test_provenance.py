"""Provenance per call: a second step call with another key keeps the first record."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

import kbfm
from kbfm._errors import KbfmInputError
from kbfm._provenance import record_step


@pytest.fixture
def adata():
    return ad.AnnData(np.ones((4, 3), dtype=np.float32))


def test_second_call_with_another_key_keeps_the_first_record(adata):
    record_step(adata, "annotate", key_added="cell_type_a", method="zero_shot")
    record_step(adata, "annotate", key_added="cell_type_b", method="marker_score")
    calls = kbfm.provenance(adata, "annotate")
    assert [c["key_added"] for c in calls] == ["cell_type_a", "cell_type_b"]
    assert [c["method"] for c in calls] == ["zero_shot", "marker_score"]
    (first,) = kbfm.provenance(adata, key_added="cell_type_a")
    assert first["method"] == "zero_shot" and first["step"] == "annotate"
    # the latest record per step stays where readers look for it
    assert adata.uns["kbfm"]["annotate"]["key_added"] == "cell_type_b"
    assert adata.uns["kbfm"]["history"] == ["annotate", "annotate"]


def test_calls_keep_their_order_across_steps_and_an_h5ad_round_trip(adata, tmp_path):
    for i, step in enumerate(["auto_qc", "normalize", "embed_cells", "annotate"] * 3):
        record_step(adata, step, key_added=f"k{i}", n=i)
    path = tmp_path / "a.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    calls = kbfm.provenance(back)
    assert [c["n"] for c in calls] == list(range(12))
    assert [c["step"] for c in kbfm.provenance(back, "normalize")] == ["normalize"] * 3
    assert next(iter(back.uns["kbfm"]["calls"])) == "001_auto_qc"


def test_objects_from_before_per_call_records_still_read(adata):
    adata.uns["kbfm"] = {
        "annotate": {"key_added": "x", "method": "zero_shot"},
        "history": ["annotate"],
    }
    (only,) = kbfm.provenance(adata)
    assert only == {"step": "annotate", "key_added": "x", "method": "zero_shot"}
    record_step(adata, "annotate", key_added="y")
    assert [c["key_added"] for c in kbfm.provenance(adata, "annotate")] == ["x", "y"]
    assert kbfm.provenance(ad.AnnData(np.ones((2, 2)))) == []


def test_provenance_checks_its_arguments():
    with pytest.raises(KbfmInputError, match="expects an AnnData"):
        kbfm.provenance("adata.h5ad")
    with pytest.raises(KbfmInputError, match="step must be a string"):
        kbfm.provenance(ad.AnnData(np.ones((2, 2))), ["annotate"])
    with pytest.raises(KbfmInputError, match="key_added must be a string"):
        kbfm.provenance(ad.AnnData(np.ones((2, 2))), key_added=1)
