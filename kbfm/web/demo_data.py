"""Demo data for the web app: a generated lymph-node section with its H&E, and PBMCs."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

#: Textbook markers of the generated regions (the first 10 of kbfm's marker sets).
REGION_MARKERS: dict[str, list[str]] = {
    "B cell": ["MS4A1", "CD79A", "CD79B", "CD19", "PAX5", "BANK1", "TNFRSF13C", "TCL1A", "BLK"],
    "T cell": ["CD3D", "CD3E", "CD3G", "CD2", "CD247", "TRAC", "IL7R", "CCR7", "LCK", "CD5"],
    "plasma cell": ["SDC1", "TNFRSF17", "PRDM1", "JCHAIN", "MZB1", "XBP1", "DERL3", "FKBP11"],
    "macrophage": ["CD68", "CD163", "MRC1", "C1QA", "C1QB", "C1QC", "APOE", "CSF1R", "AIF1"],
    "fibroblast": ["PDGFRA", "COL1A1", "COL1A2", "COL3A1", "DCN", "LUM", "MMP2", "FBLN1"],
    "endothelial cell": ["PECAM1", "CDH5", "VWF", "KDR", "CLDN5", "EMCN", "FLT1", "PLVAP"],
}
#: Genes every spot expresses at a similar level.
HOUSEKEEPING = [
    "ACTB", "GAPDH", "B2M", "MALAT1", "EEF1A1", "TPT1", "RPLP0", "RPS18", "RPL13",
    "FTL", "FTH1", "TMSB4X", "UBC", "HSP90AB1", "PPIA", "YWHAZ", "TBP", "HPRT1",
]  # fmt: skip

FULL_SIZE = 2000  # full-resolution pixels per side
HIRES_SIZE = 1000  # stored H&E image, scale factor HIRES_SIZE / FULL_SIZE
SPOT_STEP = 64.0  # spot centre spacing in full-resolution pixels
LIBRARY_ID = "generated_lymph_node"

_CENTRE = FULL_SIZE / 2
_RADIUS = 0.46 * FULL_SIZE
_FOLLICLES = [(0.62, a) for a in (0.3, 1.5, 2.6, 3.7, 4.8)]  # (radius fraction, angle)
_VESSELS = [(0.18, a) for a in (0.5, 2.6, 4.6)]


def _regions(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Region name per point ('' outside the tissue), from the section's geometry."""
    dx, dy = x - _CENTRE, y - _CENTRE
    r = np.hypot(dx, dy)
    out = np.full(x.shape, "", dtype=object)
    out[r < _RADIUS] = "T cell"
    out[r < 0.32 * _RADIUS] = "plasma cell"
    out[(r < 0.32 * _RADIUS) & (np.sin(3 * np.arctan2(dy, dx)) > 0.55)] = "macrophage"
    for frac, angle in _FOLLICLES:
        cx, cy = _CENTRE + frac * _RADIUS * np.cos(angle), _CENTRE + frac * _RADIUS * np.sin(angle)
        out[np.hypot(x - cx, y - cy) < 0.17 * _RADIUS] = "B cell"
    for frac, angle in _VESSELS:
        cx, cy = _CENTRE + frac * _RADIUS * np.cos(angle), _CENTRE + frac * _RADIUS * np.sin(angle)
        out[np.hypot(x - cx, y - cy) < 0.07 * _RADIUS] = "endothelial cell"
    out[(r >= 0.9 * _RADIUS) & (r < _RADIUS)] = "fibroblast"
    return out


def _he_image(rng: np.random.Generator) -> np.ndarray:
    """A generated H&E: haematoxylin nuclei whose density follows the regions."""
    scale = FULL_SIZE / HIRES_SIZE
    yy, xx = np.mgrid[0:HIRES_SIZE, 0:HIRES_SIZE].astype(float) * scale
    region = _regions(xx, yy)
    background = {
        "": (246, 244, 246),
        "T cell": (214, 160, 200),
        "B cell": (190, 130, 190),
        "plasma cell": (226, 150, 185),
        "macrophage": (232, 170, 190),
        "fibroblast": (238, 150, 180),
        "endothelial cell": (240, 200, 215),
    }
    density = {"": 0.0, "T cell": 0.05, "B cell": 0.1, "plasma cell": 0.04}
    density |= {"macrophage": 0.03, "fibroblast": 0.015, "endothelial cell": 0.01}
    img = np.zeros((HIRES_SIZE, HIRES_SIZE, 3), dtype=np.float32)
    nuclei_p = np.zeros((HIRES_SIZE, HIRES_SIZE), dtype=np.float32)
    for name, colour in background.items():
        sel = region == name
        img[sel] = colour
        nuclei_p[sel] = density[name] / 4
    seeds = rng.random(nuclei_p.shape) < nuclei_p
    nuclei = seeds | np.roll(seeds, 1, 0) | np.roll(seeds, 1, 1) | np.roll(seeds, (1, 1), (0, 1))
    img[nuclei] = (85, 45, 135)
    stripes = (region == "fibroblast") & (np.sin((xx + yy) / 9.0) > 0.6)
    img[stripes] = (205, 95, 150)
    img += rng.normal(0.0, 5.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def generated_lymph_node(seed: int = 0) -> AnnData:
    """A generated lymph-node section: spots over a drawn H&E, six cell-type regions.

    B-cell follicles sit in a T-cell paracortex around a medulla of plasma cells and
    macrophages, with vessels and a fibroblast capsule. Each spot mixes its region's cell
    type (80-100%) with a random other one; counts are Poisson around marker-gene
    rates. Nothing is downloaded.

    Parameters
    ----------
    seed
        Random seed.

    Returns
    -------
    Log-normalised expression in ``X`` (counts in ``layers["counts"]``),
    ``obs["region"]`` (the generating cell type), ``obsm["spatial"]`` in full-resolution
    pixels, and the H&E under ``uns["spatial"]["generated_lymph_node"]``.

    Examples
    --------
    >>> adata = generated_lymph_node()
    >>> sorted(adata.obs["region"].unique())[:2]
    ['B cell', 'T cell']
    """
    rng = np.random.default_rng(seed)
    xs = np.arange(SPOT_STEP / 2, FULL_SIZE, SPOT_STEP)
    grid = np.array([(x + (i % 2) * SPOT_STEP / 2, y) for i, y in enumerate(xs) for x in xs])
    region = _regions(grid[:, 0], grid[:, 1])
    keep = region != ""
    grid, region = grid[keep], region[keep].astype(str)
    types = list(REGION_MARKERS)
    genes = [g for markers in REGION_MARKERS.values() for g in markers] + HOUSEKEEPING
    signature = np.full((len(types), len(genes)), 0.3)
    for k, markers in enumerate(REGION_MARKERS.values()):
        signature[k, [genes.index(g) for g in markers]] = 8.0
    signature[:, -len(HOUSEKEEPING) :] = 12.0
    mix = np.zeros((len(grid), len(types)))
    main = np.array([types.index(r) for r in region])
    other = (main + rng.integers(1, len(types), len(grid))) % len(types)
    share = rng.uniform(0.0, 0.2, len(grid))
    mix[np.arange(len(grid)), main] = 1.0 - share
    mix[np.arange(len(grid)), other] += share
    library = rng.lognormal(0.0, 0.25, (len(grid), 1))
    counts = rng.poisson(mix @ signature * library).astype(np.float32)
    total = counts.sum(axis=1, keepdims=True)
    obs = pd.DataFrame(
        {"region": pd.Categorical(region, categories=types)},
        index=[f"spot{i:04d}" for i in range(len(grid))],
    )
    adata = AnnData(
        np.log1p(counts / np.maximum(total, 1.0) * 1e4).astype(np.float32),
        obs=obs,
        var=pd.DataFrame(index=genes),
        layers={"counts": counts},
        obsm={"spatial": grid},
    )
    adata.uns["spatial"] = {
        LIBRARY_ID: {
            "images": {"hires": _he_image(rng)},
            "scalefactors": {
                "tissue_hires_scalef": HIRES_SIZE / FULL_SIZE,
                "spot_diameter_fullres": 0.55 * SPOT_STEP,
            },
            "metadata": {"source": "generated by kbfm.web.demo_data (not real tissue)"},
        }
    }
    return adata
