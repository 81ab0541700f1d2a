"""Slides and patches: openslide pyramids, PIL fallback, mpp, bad files, fixed-µm patches."""

from __future__ import annotations

import numpy as np
import pytest
from _histology import HEIGHT, MPP, SHARED, WIDTH, texture_image, write_pyramid
from PIL import Image

from kbfm._errors import KbfmInputError
from kbfm.io.patches import (
    PatchDataset,
    PatchSpec,
    extract_patches,
    read_patch,
    tile_tissue,
    tissue_mask,
)
from kbfm.io.slide import open_slide

WSI = SHARED / "wsi"
needs_wsi = pytest.mark.skipif(not WSI.exists(), reason=f"shared WSI fixtures not at {WSI}")


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory):
    return write_pyramid(tmp_path_factory.mktemp("slide") / "tex.tif", texture_image())


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "he.png"
    Image.fromarray(texture_image(300, 200)).save(path)
    return path


def test_pyramidal_tiff_opens_with_openslide_levels_and_mpp(pyramid):
    slide = open_slide(pyramid)
    assert slide.backend == "openslide"
    assert slide.dimensions == (WIDTH, HEIGHT)
    assert len(slide.level_dimensions) == 3
    assert slide.level_downsamples[2] == pytest.approx(4.0, rel=0.01)
    assert slide.mpp == pytest.approx(MPP, rel=1e-3)
    assert slide.mpp_source == "metadata"


def test_patch_reads_from_best_level_at_fixed_physical_size(pyramid):
    slide = open_slide(pyramid)
    assert slide.best_level(4.0) == 2
    coarse = PatchSpec(56, 2.0)  # 112 µm at 2 µm/px: downsample 4 -> level 2
    fine = PatchSpec(224, 0.5)  # same 112 µm field at level 0
    a, pad_a = read_patch(slide, (256.0, 512.0), coarse)
    b, _ = read_patch(slide, (256.0, 512.0), fine)
    assert a.shape == (56, 56, 3) and pad_a == 0.0
    small = np.asarray(Image.fromarray(b).resize((56, 56), Image.BOX)).astype(float)
    assert np.abs(small.mean((0, 1)) - a.astype(float).mean((0, 1))).max() < 8


def test_border_patch_is_padded_white_and_reported(pyramid):
    slide = open_slide(pyramid)
    patches, pad = extract_patches(slide, np.array([[0.0, 0.0], [700.0, 500.0]]))
    assert pad[0] == pytest.approx(0.75, abs=0.01)
    assert pad[1] == 0.0
    assert (patches[0, :100, :100] == 255).all()


def test_spot_outside_image_is_an_error(pyramid):
    slide = open_slide(pyramid)
    with pytest.raises(KbfmInputError, match=r"outside the 1536 x 1024 image"):
        extract_patches(slide, np.array([[10.0, 10.0], [5000.0, 20.0]]))


def test_pil_fallback_and_unknown_mpp(png):
    slide = open_slide(png)
    assert slide.backend == "pil" and slide.mpp is None
    with pytest.raises(KbfmInputError, match="mpp="):
        read_patch(slide, (100, 100), PatchSpec())
    patch, _ = read_patch(open_slide(png, mpp=0.5), (150, 100), PatchSpec(64, 1.0))
    assert patch.shape == (64, 64, 3)


def test_implausible_mpp_is_refused(png):
    with pytest.raises(KbfmInputError, match="plausible"):
        open_slide(png, mpp=1e4)


def test_truncated_and_garbage_files_are_reported(tmp_path, png):
    jpg = tmp_path / "he.jpg"
    Image.open(png).convert("RGB").save(jpg, quality=90)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(jpg.read_bytes()[: jpg.stat().st_size // 2])
    with pytest.raises(KbfmInputError, match="corrupt or truncated"):
        open_slide(cut, mpp=0.5).read_region((0, 0), (10, 10))
    junk = tmp_path / "slide.svs"
    junk.write_bytes(b"not an image at all" * 100)
    with pytest.raises(KbfmInputError, match="corrupt, truncated or unsupported"):
        open_slide(junk)
    with pytest.raises(KbfmInputError, match="not found"):
        open_slide(tmp_path / "missing.svs")


def test_huge_plain_image_is_not_decoded(tmp_path):
    import tifffile

    path = tmp_path / "huge.tif"  # 100k x 100k strip TIFF written without pixel data
    tifffile.imwrite(path, shape=(100_000, 100_000, 3), dtype=np.uint8, photometric="rgb")
    with pytest.raises(KbfmInputError, match="pyramid"):
        open_slide(path)


def test_tissue_detection_and_tiling(pyramid):
    slide = open_slide(pyramid)
    mask, _ = tissue_mask(slide, max_size=512)
    third = mask.shape[1] // 3
    assert mask[:, :third].mean() > 0.9
    assert mask[:, 2 * third :].mean() < 0.5
    tiles = tile_tissue(slide, PatchSpec(224, 0.5), min_tissue=0.6)
    assert len(tiles) > 0 and (tiles[:, 0] < 2 * WIDTH / 3 + 112).all()


def test_patch_dataset_with_parallel_workers_matches_direct_reads(pyramid):
    from torch.utils.data import DataLoader

    slide = open_slide(pyramid)
    centers = np.array([[200.0, 200.0], [800.0, 300.0], [1300.0, 900.0]])
    direct, _ = extract_patches(slide, centers, PatchSpec(64, 1.0))
    loader = DataLoader(
        PatchDataset(slide, centers, PatchSpec(64, 1.0)), batch_size=2, num_workers=2
    )
    got = np.concatenate([b.numpy() for b, _ in loader])
    np.testing.assert_array_equal(got, direct)


@needs_wsi
@pytest.mark.shared_data
def test_shared_wsi_fixtures_open():
    svs = open_slide(WSI / "small.svs")
    assert svs.backend == "openslide" and svs.mpp == pytest.approx(0.499)
    boxes = open_slide(WSI / "boxes.tiff")  # 72-dpi style tags: not a scan resolution
    assert len(boxes.level_dimensions) == 4 and boxes.mpp is None
    dcm = open_slide(WSI / "boxes_0.dcm")
    assert dcm.read_region((0, 0), (8, 8)).shape == (8, 8, 3)
    assert len(svs.fingerprint) == 64


def test_plain_image_that_would_not_fit_in_memory_is_refused_before_decoding(tmp_path, monkeypatch):
    from PIL import Image

    path = tmp_path / "big.png"
    Image.fromarray(np.full((1000, 1500, 3), 200, np.uint8)).save(path)
    # 1.5 Mpx x 3 bytes x 3.5 copies = 15.8 MB needed; pretend 8 MB are free
    monkeypatch.setattr("kbfm.io.slide.available_memory", lambda: 8 * 2**20)
    with pytest.raises(KbfmInputError, match=r"1500 x 1000 image .*GiB of memory .*pyramidal TIFF"):
        open_slide(path, mpp=0.5)
    monkeypatch.setattr("kbfm.io.slide.available_memory", lambda: 64 * 2**20)
    assert open_slide(path, mpp=0.5).read_region((0, 0), (4, 4)).shape == (4, 4, 3)
    monkeypatch.setattr("kbfm.io.slide.available_memory", lambda: None)  # unknown: allowed
    assert open_slide(path, mpp=0.5).dimensions == (1500, 1000)


def test_available_memory_reads_the_machine_and_cgroup_limits():
    from kbfm._memory import available_memory

    free = available_memory()
    assert free is None or 0 < free < 2**50


def test_slide_truncated_after_opening_raises_instead_of_black_pixels(tmp_path):
    path = write_pyramid(tmp_path / "big.tif", texture_image(3072, 2048))
    slide = open_slide(path)
    assert slide.backend == "openslide"
    assert slide.read_region((100, 100), (64, 64)).mean() > 100  # readable before
    size = path.stat().st_size
    with path.open("r+b") as fh:
        fh.truncate(size // 3)  # e.g. a copy still in progress, or a full disk
    with pytest.raises(KbfmInputError, match="corrupt or truncated"):
        slide.read_region((2900, 1900), (64, 64))
