"""Generated histology for tests: a pyramidal TIFF with three texture regions and spots
whose expression depends on the region under them."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from _paths import SHARED as SHARED_PATH

SHARED = SHARED_PATH
WIDTH, HEIGHT, MPP = 1536, 1024, 0.5
REGIONS = ("nuclei", "stroma", "fat")  # left, middle and right thirds


def texture_image(width: int = WIDTH, height: int = HEIGHT, seed: int = 0) -> np.ndarray:
    """RGB image: dense purple nuclei | pink fibrous stripes | white fat with thin septa."""
    rng = np.random.default_rng(seed)
    img = np.empty((height, width, 3), dtype=np.float32)
    third = width // 3
    yy, xx = np.mgrid[0:height, 0:width]
    img[:] = (235, 170, 200)  # eosin pink
    stripes = (np.sin((xx + 0.6 * yy) / 3.0) > 0.3)[:, third : 2 * third]
    img[:, third : 2 * third][stripes] = (200, 90, 150)
    nuclei = np.zeros((height, third), dtype=bool)
    for cy, cx in rng.integers(0, (height, third), size=(height * third // 180, 2)):
        nuclei[max(cy - 3, 0) : cy + 4, max(cx - 3, 0) : cx + 4] = True
    img[:, :third][nuclei] = (80, 40, 130)  # haematoxylin purple
    fat = img[:, 2 * third :]
    fat[:] = (250, 248, 250)
    septa = np.abs(np.sin(xx[:, 2 * third :] / 25.0) * np.sin(yy[:, 2 * third :] / 25.0)) < 0.08
    fat[septa] = (225, 150, 190)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_pyramid(path: Path, image: np.ndarray, mpp: float = MPP, levels: int = 3) -> Path:
    """Write a tiled pyramidal TIFF (level i downsampled 2**i) with resolution tags."""
    import tifffile
    from PIL import Image

    res = 1e4 / mpp  # pixels per centimetre
    with tifffile.TiffWriter(path) as tif:
        current = image
        for level in range(levels):
            tif.write(
                current,
                tile=(128, 128),
                photometric="rgb",
                compression="zlib",
                resolution=(res / 2**level, res / 2**level),
                resolutionunit="CENTIMETER",
                subfiletype=0 if level == 0 else 1,
            )
            h, w = current.shape[:2]
            current = np.asarray(Image.fromarray(current).resize((w // 2, h // 2), Image.BOX))
    return path


def region_of(x: np.ndarray, width: int = WIDTH) -> np.ndarray:
    """Region index (0, 1, 2) of level-0 x coordinates."""
    return np.minimum(x // (width // 3), 2).astype(int)


def spots_adata(step: int = 112, seed: int = 0) -> ad.AnnData:
    """Spots on a grid with counts: MARKER_N high over nuclei, MARKER_S over stroma."""
    rng = np.random.default_rng(seed)
    xs = np.arange(step // 2 + 16, WIDTH - 16, step)
    ys = np.arange(step // 2 + 16, HEIGHT - 16, step)
    grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2).astype(float)
    region = region_of(grid[:, 0])
    rates = np.full((len(grid), 20), 5.0)
    rates[:, 0] = np.choose(region, [60.0, 5.0, 1.0])
    rates[:, 1] = np.choose(region, [5.0, 60.0, 1.0])
    counts = rng.poisson(rates).astype(np.float32)
    genes = ["MARKER_N", "MARKER_S"] + [f"NOISE{i}" for i in range(18)]
    adata = ad.AnnData(counts, var=pd.DataFrame(index=genes))
    adata.obs_names = [f"spot{i}" for i in range(len(grid))]
    adata.obsm["spatial"] = grid
    adata.obs["region"] = pd.Categorical(np.array(REGIONS)[region])
    adata.obs["section"] = np.where(grid[:, 1] < HEIGHT / 2, "top", "bottom")
    return adata
