"""SpatialData in and out: transformations into image pixels, patches, results written back."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _histology import SHARED, spots_adata, texture_image, write_pyramid

from kbfm._errors import KbfmInputError
from kbfm.im import embed_image
from kbfm.io import open_slide, read_spatialdata, read_visium, write_spatialdata
from kbfm.io.patches import PatchSpec, extract_patches

sd = pytest.importorskip("spatialdata", reason="spatialdata is an optional extra: kbfm[spatial]")
from spatialdata.models import Image2DModel, ShapesModel, TableModel  # noqa: E402
from spatialdata.transformations import Affine, Identity, Scale  # noqa: E402

VISIUM = SHARED / "spatial" / "visium_tiny_scanpy" / "1.0.0"
H, W, N = 400, 600, 300
#: Shapes -> "global": x and y swapped, then shifted (so a missing transform shows).
SWAP = np.array([[0.0, 1.0, 10.0], [1.0, 0.0, -5.0], [0.0, 0.0, 1.0]])

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*(pkg_resources|zarr v2|autosharding|version mismatch|deprecated class Scaler).*"
)


def coded_image() -> np.ndarray:
    """(c, y, x) image whose red channel is x // 3 and green channel is y // 2."""
    yy, xx = np.mgrid[0:H, 0:W]
    return np.stack([xx // 3, yy // 2, np.full_like(xx, 200)]).astype(np.uint8)


def spots(pixels: np.ndarray, *, image_scale: float, systems: tuple[str, ...] = ("global",)):
    """Circles placed so that, through SWAP and the image's Scale, they land on ``pixels``."""
    glob = pixels * image_scale
    local = (np.linalg.inv(SWAP) @ np.column_stack([glob, np.ones(len(glob))]).T).T[:, :2]
    transform = Affine(SWAP, input_axes=("x", "y"), output_axes=("x", "y"))
    return ShapesModel.parse(
        local,
        geometry=0,
        radius=np.full(len(local), 6.0),
        index=np.arange(len(local)),
        transformations=dict.fromkeys(systems, transform),
    )


def table_for(n: int, region: str = "cells") -> object:
    rng = np.random.default_rng(0)
    obs = pd.DataFrame(
        {"region": pd.Categorical([region] * n), "cell_id": np.arange(n)},
        index=[f"cell{i}" for i in range(n)],
    )
    table = pd.DataFrame(rng.poisson(2.0, (n, 12)).astype(np.float32))
    import anndata as ad

    adata = ad.AnnData(table.to_numpy(), obs=obs)
    return TableModel.parse(adata, region=region, region_key="region", instance_key="cell_id")


@pytest.fixture
def pixels():
    rng = np.random.default_rng(1)
    return np.column_stack([rng.uniform(60, W - 60, N), rng.uniform(60, H - 60, N)])


@pytest.fixture
def sdata(pixels):
    image = Image2DModel.parse(
        coded_image(),
        dims=("c", "y", "x"),
        transformations={"global": Scale([2.0, 2.0], axes=("x", "y"))},
    )
    return sd.SpatialData(
        images={"he": image},
        shapes={"cells": spots(pixels, image_scale=2.0)},
        tables={"table": table_for(N)},
    )


@pytest.mark.slow
def test_round_trip_through_zarr_maps_shapes_onto_image_pixels(sdata, pixels, tmp_path):
    sdata.write(tmp_path / "s.zarr")
    adata = read_spatialdata(tmp_path / "s.zarr", mpp=0.5)
    np.testing.assert_allclose(adata.obsm["spatial"], pixels, atol=1e-9)
    lib = adata.uns["spatial"]["cells"]
    assert lib["metadata"]["microns_per_pixel"] == 0.5
    assert lib["metadata"]["coordinate_system"] == "global"
    assert lib["scalefactors"]["spot_diameter_fullres"] == pytest.approx(6.0)  # 12 / 2
    assert lib["images"]["hires"].shape == (H, W, 3)
    # The patch around each centre is the image around that pixel: colour encodes position.
    slide = open_slide(lib["metadata"]["source_image_path"])
    patches, _ = extract_patches(slide, adata.obsm["spatial"][:20], PatchSpec(16, 0.5))
    centre = patches[:, 8, 8].astype(int)
    expected = np.column_stack([pixels[:20, 0] // 3, pixels[:20, 1] // 2])
    np.testing.assert_allclose(centre[:, :2], expected, atol=1)
    assert adata.uns["kbfm"]["read_spatialdata"]["image"] == "he"

    embed_image(adata, model="color-texture")
    adata.obs["kbfm_domain"] = pd.Categorical(np.where(pixels[:, 0] < W / 2, "left", "right"))
    write_spatialdata(adata, tmp_path / "s.zarr")
    table = sd.read_zarr(tmp_path / "s.zarr").tables["table"]
    np.testing.assert_allclose(table.obsm["X_image"], adata.obsm["X_image"])
    assert table.obs["kbfm_domain"].tolist() == adata.obs["kbfm_domain"].tolist()
    assert {"embed_image", "write_spatialdata"} <= set(table.uns["kbfm"])
    assert "spatial" not in table.obsm  # kbfm's pixel coordinates stay out of the table


def test_results_for_a_subset_of_rows_leave_nan_elsewhere(sdata):
    adata = read_spatialdata(sdata, mpp=0.5)[:10].copy()
    adata.obsm["X_test"] = np.ones((10, 3), dtype=np.float32)
    write_spatialdata(adata, sdata)
    out = sdata.tables["table"].obsm["X_test"]
    assert out.shape == (N, 3) and np.all(out[:10] == 1) and np.isnan(out[10:]).all()


def test_new_store_from_kbfm_layout_gives_the_same_patches(tmp_path):
    slide_path = write_pyramid(tmp_path / "he.tif", texture_image(), levels=1)
    adata = spots_adata(step=200)
    adata.uns["spatial"] = {
        "slide": {
            "images": {},
            "scalefactors": {"spot_diameter_fullres": 110.0},
            "metadata": {"source_image_path": str(slide_path), "microns_per_pixel": 0.5},
        }
    }
    written = write_spatialdata(adata, tmp_path / "new.zarr")
    assert set(written.images) == {"slide_full_image"} and set(written.shapes) == {"slide"}
    back = read_spatialdata(tmp_path / "new.zarr", mpp=0.5)
    np.testing.assert_allclose(back.obsm["spatial"], adata.obsm["spatial"])
    assert back.obs["region"].tolist() == adata.obs["region"].tolist()  # user column kept
    assert back.uns["spatial"]["slide"]["scalefactors"]["spot_diameter_fullres"] == 110.0
    spec = PatchSpec(64, 0.5)  # native resolution: level 0 of both files
    original, _ = extract_patches(open_slide(slide_path, mpp=0.5), adata.obsm["spatial"], spec)
    source = back.uns["spatial"]["slide"]["metadata"]["source_image_path"]
    again, _ = extract_patches(open_slide(source), back.obsm["spatial"], spec)
    np.testing.assert_array_equal(again, original)


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.skipif(not VISIUM.exists(), reason=f"tiny Visium layout not at {VISIUM}")
def test_visium_fixture_to_spatialdata_and_back_gives_the_same_embedding(tmp_path):
    visium = read_visium(VISIUM)
    visium = visium[visium.obs["in_tissue"].to_numpy() == 1][:40].copy()
    sdata = write_spatialdata(visium, tmp_path / "visium.zarr")
    assert {"1.0.0_hires_image", "1.0.0_lowres_image"} <= set(sdata.images)
    factors = visium.uns["spatial"]["1.0.0"]["scalefactors"]
    full_mpp = visium.uns["spatial"]["1.0.0"]["metadata"]["microns_per_pixel"]
    default = read_spatialdata(tmp_path / "visium.zarr")
    meta = default.uns["spatial"]["1.0.0"]["metadata"]
    assert meta["spatialdata_image"] == "1.0.0_hires_image"  # the finer of the two
    assert meta["coordinate_system"] == "downscaled_hires"
    hires = factors["tissue_hires_scalef"]
    np.testing.assert_allclose(default.obsm["spatial"], visium.obsm["spatial"] * hires)
    assert meta["microns_per_pixel"] == pytest.approx(full_mpp / hires)
    assert meta["mpp_source"] == "spot_diameter"

    # This fixture's hires PNG is blank, so compare embeddings on the lowres H&E: the same
    # spots embedded straight from the PNG with scanpy-style scaled coordinates.
    back = read_spatialdata(tmp_path / "visium.zarr", image_key="1.0.0_lowres_image")
    lowres = factors["tissue_lowres_scalef"]
    reference = visium.copy()
    reference.obsm["spatial"] = visium.obsm["spatial"] * lowres
    png = VISIUM / "spatial" / "tissue_lowres_image.png"
    embed_image(reference, slide=png, mpp=full_mpp / lowres, model="color-texture", cache=False)
    embed_image(back, model="color-texture", cache=False)
    assert back.obsm["X_image"].std(axis=0).max() > 0  # the spots do differ
    np.testing.assert_allclose(back.obsm["X_image"], reference.obsm["X_image"], atol=1e-5)
    write_spatialdata(back, tmp_path / "visium.zarr")
    table = sd.read_zarr(tmp_path / "visium.zarr").tables["table"]
    np.testing.assert_allclose(table.obsm["X_image"], back.obsm["X_image"])


def test_no_table_is_refused(sdata):
    del sdata.tables["table"]
    with pytest.raises(KbfmInputError, match="has no tables; kbfm needs a table"):
        read_spatialdata(sdata)


def test_several_tables_need_table_key(sdata):
    sdata.tables["other"] = table_for(N)
    with pytest.raises(KbfmInputError, match=r"specify one from: \['table', 'other'\]"):
        read_spatialdata(sdata)


def test_missing_image_key_names_the_images(sdata):
    with pytest.raises(KbfmInputError, match=r"Image 'h_e' not found; choose from \['he'\]"):
        read_spatialdata(sdata, image_key="h_e")


def test_disconnected_coordinate_systems_are_refused(pixels):
    image = Image2DModel.parse(
        coded_image(), dims=("c", "y", "x"), transformations={"microscope": Identity()}
    )
    sdata = sd.SpatialData(
        images={"he": image},
        shapes={"cells": spots(pixels, image_scale=1.0, systems=("aligned",))},
        tables={"table": table_for(N)},
    )
    with pytest.raises(KbfmInputError, match=r"No image shares a coordinate system.*'aligned'"):
        read_spatialdata(sdata)
    with pytest.raises(KbfmInputError, match=r"\['aligned'\].*\['microscope'\].*do not connect"):
        read_spatialdata(sdata, image_key="he")
    table_only = read_spatialdata(sdata, load_images=False)  # the table alone still reads
    np.testing.assert_allclose(table_only.obsm["spatial"], pixels)


def test_table_rows_without_shapes_are_refused(sdata):
    sdata.shapes["cells"] = sdata.shapes["cells"].iloc[:-5]
    with pytest.raises(KbfmInputError, match="5 table rows name instances that 'cells' lacks"):
        read_spatialdata(sdata)


def test_rgb_image_is_preferred_over_a_finer_fluorescence_channel(sdata):
    dapi = np.zeros((1, 2 * H, 2 * W), dtype=np.uint16)  # twice as fine as the H&E
    sdata.images["dapi"] = Image2DModel.parse(
        dapi, dims=("c", "y", "x"), transformations={"global": Identity()}
    )
    adata = read_spatialdata(sdata, mpp=0.5)
    assert adata.uns["spatial"]["cells"]["metadata"]["spatialdata_image"] == "he"


def test_mpp_from_the_coordinate_system_unit(sdata):
    adata = read_spatialdata(sdata, microns_per_unit=0.25)  # image pixel = 2 global units
    meta = adata.uns["spatial"]["cells"]["metadata"]
    assert meta["microns_per_pixel"] == pytest.approx(0.5)
    assert meta["mpp_source"] == "coordinate_system"


def test_mpp_from_a_visium_hd_bin_table():
    import geopandas as gpd
    from shapely.geometry import box

    corners = [(x, y) for x in range(40, W - 40, 16) for y in range(40, H - 40, 16)][:200]
    bins = gpd.GeoDataFrame(
        geometry=[box(x, y, x + 16, y + 16) for x, y in corners], index=np.arange(len(corners))
    )
    region = "sample_square_008um"
    sdata = sd.SpatialData(
        images={"he": Image2DModel.parse(coded_image(), dims=("c", "y", "x"))},
        shapes={region: ShapesModel.parse(bins)},
        tables={"square_008um": table_for(len(corners), region)},
    )
    adata = read_spatialdata(sdata)
    meta = adata.uns["spatial"][region]["metadata"]
    assert meta["microns_per_pixel"] == pytest.approx(0.5)  # 8 µm over 16 px
    assert meta["mpp_source"] == "bin_size"
    np.testing.assert_allclose(adata.obsm["spatial"], np.asarray(corners) + 8.0)
