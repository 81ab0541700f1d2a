"""Readers: Space Ranger 1.x / 2.x folders and the legacy ST layout."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from _histology import SHARED
from PIL import Image

from kbfm._errors import KbfmInputError
from kbfm.io.legacy_st import read_legacy_st
from kbfm.io.visium import read_visium

VISIUM = SHARED / "spatial" / "visium_tiny_scanpy" / "1.0.0"
HER2ST = SHARED / "histology" / "her2st"
needs_visium = pytest.mark.skipif(not VISIUM.exists(), reason=f"tiny Visium layout not at {VISIUM}")
needs_her2st = pytest.mark.skipif(not HER2ST.exists(), reason=f"HER2ST data not at {HER2ST}")


@needs_visium
@pytest.mark.shared_data
def test_read_visium_1x_layout():
    adata = read_visium(VISIUM)
    lib = adata.uns["spatial"]["1.0.0"]
    assert adata.obsm["spatial"].shape == (adata.n_obs, 2)
    assert lib["metadata"]["positions_format"] == "1.x"
    # 55 µm spot over spot_diameter_fullres pixels
    expected = 55.0 / lib["scalefactors"]["spot_diameter_fullres"]
    assert lib["metadata"]["microns_per_pixel"] == pytest.approx(expected)
    assert lib["images"]["lowres"].shape == (600, 600, 3)
    assert set(adata.obs["in_tissue"].unique()) <= {0, 1}


@needs_visium
@pytest.mark.shared_data
def test_read_visium_2x_layout_with_header(tmp_path):
    folder = tmp_path / "sr2"
    shutil.copytree(VISIUM, folder)
    old = folder / "spatial" / "tissue_positions_list.csv"
    table = pd.read_csv(old, header=None)
    table.columns = [
        "barcode",
        "in_tissue",
        "array_row",
        "array_col",
        "pxl_row_in_fullres",
        "pxl_col_in_fullres",
    ]
    table.to_csv(folder / "spatial" / "tissue_positions.csv", index=False)
    old.unlink()
    v1, v2 = read_visium(VISIUM), read_visium(folder)
    assert v2.uns["spatial"]["sr2"]["metadata"]["positions_format"] == "2.x"
    np.testing.assert_array_equal(v1.obsm["spatial"], v2.obsm["spatial"])


@needs_visium
@pytest.mark.shared_data
def test_visium_scalefactor_mismatch_is_detected(tmp_path):
    folder = tmp_path / "bad"
    shutil.copytree(VISIUM, folder)
    (folder / "spatial" / "tissue_hires_image.png").unlink()
    factors = json.loads((folder / "spatial" / "scalefactors_json.json").read_text())
    factors["tissue_lowres_scalef"] *= 0.3  # spots squeezed into a corner of the image
    (folder / "spatial" / "scalefactors_json.json").write_text(json.dumps(factors))
    image = np.full((600, 600, 3), 245, np.uint8)
    image[300:, 300:] = (180, 80, 160)  # tissue only where no spot lands
    Image.fromarray(image).save(folder / "spatial" / "tissue_lowres_image.png")
    with pytest.warns(UserWarning, match="do not belong together"):
        read_visium(folder)


def test_read_visium_missing_files(tmp_path):
    with pytest.raises(KbfmInputError, match="not found"):
        read_visium(tmp_path / "nope")
    (tmp_path / "spatial").mkdir()
    with pytest.raises(KbfmInputError, match=r"\.h5 files in the folder"):
        read_visium(tmp_path)


def _legacy_tables(tmp_path, names):
    counts = pd.DataFrame(np.ones((3, 2), int), index=names, columns=["GENE1", "GENE2"])
    counts.to_csv(tmp_path / "counts.tsv", sep="\t")
    spots = pd.DataFrame(
        {
            "x": [1, 2, 3],
            "y": [1, 1, 1],
            "pixel_x": [100.0, 390.0, 680.0],
            "pixel_y": [100.0, 100.0, 100.0],
            "selected": 1,
        }
    )
    spots.to_csv(tmp_path / "spots.tsv", sep="\t", index=False)
    return tmp_path / "counts.tsv", tmp_path / "spots.tsv"


def test_legacy_st_grid_mpp_and_join(tmp_path):
    counts, spots = _legacy_tables(tmp_path, ["1x1", "2x1", "3x1"])
    adata = read_legacy_st(counts, spots)
    meta = adata.uns["spatial"]["counts"]["metadata"]
    assert meta["microns_per_pixel"] == pytest.approx(200.0 / 290.0)
    assert adata.obsm["spatial"][1].tolist() == [390.0, 100.0]


def test_legacy_st_says_which_selected_spots_have_no_counts(tmp_path, caplog):
    counts, spots = _legacy_tables(tmp_path, ["1x1", "3x1", "9x9"])  # no row for 2x1
    caplog.set_level("WARNING", logger="kbfm.io.legacy_st")
    adata = read_legacy_st(counts, spots)
    assert list(adata.obs_names) == ["1x1", "3x1"]
    assert "1 of 3 selected spots in spots.tsv have no row in counts.tsv" in caplog.text
    assert "2x1" in caplog.text
    meta = adata.uns["spatial"]["counts"]["metadata"]
    assert meta["selected_spots_without_counts"] == ["2x1"]


def test_legacy_st_bad_inputs(tmp_path):
    counts, spots = _legacy_tables(tmp_path, ["A", "B", "C"])
    with pytest.raises(KbfmInputError, match="'<x>x<y>'"):
        read_legacy_st(counts, spots)
    counts, spots = _legacy_tables(tmp_path, ["1x1", "2x1", "3x1"])
    small = tmp_path / "small.png"
    Image.fromarray(np.full((200, 200, 3), 200, np.uint8)).save(small)
    with pytest.raises(KbfmInputError, match="outside the 200 x 200 image"):
        read_legacy_st(counts, spots, small)


@needs_her2st
@pytest.mark.shared_data
def test_read_legacy_st_her2st_section():
    image = next((HER2ST / "imgs").glob("C2_*.jpg"))
    adata = read_legacy_st(HER2ST / "cnts/C2.tsv.gz", HER2ST / "spots/C2_selection.tsv", image)
    assert adata.n_obs == 187 and adata.n_vars > 15_000
    meta = adata.uns["spatial"]["C2"]["metadata"]
    assert 0.6 < meta["microns_per_pixel"] < 0.8  # ~290 px per 200 µm
    assert meta["source_image_path"].endswith(".jpg")
    assert meta["spots_on_tissue_fraction"] > 0.5
    assert float(adata.X.sum()) > 0


def _truncate(path, keep):
    path.write_bytes(path.read_bytes()[:keep])


@needs_visium
@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("target", "damage", "message"),
    [
        ("spatial/scalefactors_json.json", lambda p: p.write_text("{oops"), "scale factors"),
        ("spatial/scalefactors_json.json", lambda p: p.write_text("[1, 2]"), "JSON object"),
        ("spatial/tissue_positions_list.csv", lambda p: p.write_text(""), "spot positions"),
        ("filtered_feature_bc_matrix.h5", lambda p: _truncate(p, 1000), "10x counts .h5"),
        ("spatial/tissue_hires_image.png", lambda p: _truncate(p, 500), "hires image"),
    ],
)
def test_malformed_visium_files_name_the_file(tmp_path, target, damage, message):
    folder = tmp_path / "visium"
    shutil.copytree(VISIUM, folder)
    damage(folder / target)
    with pytest.raises(KbfmInputError, match=message) as err:
        read_visium(folder)
    assert target.split("/")[-1] in str(err.value)


@needs_her2st
@pytest.mark.shared_data
def test_pale_aligned_section_does_not_warn_but_shifted_spots_do(tmp_path):
    import warnings

    image = next((HER2ST / "imgs").glob("C2_*.jpg"))
    pale = tmp_path / "C2_pale.jpg"
    with Image.open(image) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.float32)
    Image.fromarray((rgb * 0.15 + 255 * 0.85).astype(np.uint8)).save(pale, quality=90)
    counts, spots = HER2ST / "cnts/C2.tsv.gz", HER2ST / "spots/C2_selection.tsv"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a false alarm would fail here
        adata = read_legacy_st(counts, spots, pale)
    meta = adata.uns["spatial"]["C2"]["metadata"]
    assert meta["spots_on_tissue_fraction"] > 0.7
    table = pd.read_csv(spots, sep="\t")
    with Image.open(image) as im:
        width = im.size[0]
    table["pixel_x"] = table["pixel_x"] + 0.4 * width  # spots moved off the tissue
    table["pixel_x"] = table["pixel_x"].clip(upper=width - 1)
    moved = tmp_path / "moved.tsv"
    table.to_csv(moved, sep="\t", index=False)
    with pytest.warns(UserWarning, match="of spots land on tissue"):
        read_legacy_st(counts, moved, image)
