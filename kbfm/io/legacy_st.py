"""Read the original Spatial Transcriptomics (ST, 100 µm spots) layout into AnnData."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._errors import KbfmInputError
from .._keys import MPP_KEY, SOURCE_IMAGE_KEY, SPATIAL_KEY
from ._spatial import on_tissue_fraction, warn_if_off_tissue

logger = logging.getLogger(__name__)

#: Legacy ST array: 100 µm spots, 200 µm centre to centre.
ST_SPOT_DIAMETER_UM = 100.0
ST_SPOT_SPACING_UM = 200.0


def _grid_mpp(spots: pd.DataFrame, spacing_um: float) -> float:
    """Microns per pixel from a least-squares fit of pixel centres on array coordinates."""
    ax = "new_x" if "new_x" in spots else "x"
    ay = "new_y" if "new_y" in spots else "y"
    slopes = []
    for array_col, pixel_col in ((ax, "pixel_x"), (ay, "pixel_y")):
        a = spots[array_col].to_numpy(float)
        p = spots[pixel_col].to_numpy(float)
        if np.ptp(a) > 0:
            slopes.append(abs(np.polyfit(a, p, 1)[0]))
    if not slopes or min(slopes) <= 0:
        msg = "Cannot derive microns per pixel: the spot grid has no spread; pass mpp=."
        raise KbfmInputError(msg)
    return spacing_um / float(np.mean(slopes))


def read_legacy_st(
    counts: str | os.PathLike,
    spots: str | os.PathLike,
    image: str | os.PathLike | None = None,
    *,
    library_id: str | None = None,
    mpp: float | None = None,
    spot_spacing_um: float = ST_SPOT_SPACING_UM,
    thumbnail_size: int = 2000,
) -> AnnData:
    """Read a legacy ST section: counts table, spot file with pixel centres, H&E image.

    Parameters
    ----------
    counts
        Tab-separated counts (optionally gzipped): rows are spots named ``"<x>x<y>"``
        (array coordinates), columns are genes.
    spots
        Tab-separated spot file with columns ``x y pixel_x pixel_y`` (and optionally
        ``new_x new_y selected``); joined to the counts on ``f"{x}x{y}"``. Rows with
        ``selected == 0`` are dropped.
    image
        The H&E image the pixel centres refer to (stored as ``source_image_path``; a
        thumbnail goes to ``uns['spatial'][library_id]['images']['hires']``).
    library_id
        Key under ``uns['spatial']`` (default: the counts file stem).
    mpp
        Microns per image pixel; by default derived from the spot grid
        (``spot_spacing_um`` between neighbouring array positions).
    spot_spacing_um
        Centre-to-centre distance of the ST array.
    thumbnail_size
        Longest side of the stored thumbnail.

    Returns
    -------
    AnnData with raw counts (sparse) in ``X``, ``obsm['spatial']`` in image pixels,
    ``obs['array_x', 'array_y']`` and ``uns['spatial'][library_id]``.

    Examples
    --------
    >>> adata = read_legacy_st("C2.tsv.gz", "C2_selection.tsv", "C2.jpg")  # doctest: +SKIP
    """
    counts, spots = Path(counts).expanduser(), Path(spots).expanduser()
    for p in (counts, spots):
        if not p.exists():
            msg = f"File not found: {p}."
            raise KbfmInputError(msg)
    table = pd.read_csv(counts, sep="\t", index_col=0)
    table.index = table.index.astype(str)
    spot_table = pd.read_csv(spots, sep="\t")
    needed = {"x", "y", "pixel_x", "pixel_y"}
    if not needed <= set(spot_table.columns):
        msg = (
            f"{spots.name} lacks columns {sorted(needed - set(spot_table.columns))}; "
            "expected a legacy ST spot file (x y new_x new_y pixel_x pixel_y selected)."
        )
        raise KbfmInputError(msg)
    if "selected" in spot_table:
        spot_table = spot_table[spot_table["selected"].astype(int) == 1]
    spot_table.index = [
        f"{int(x)}x{int(y)}" for x, y in zip(spot_table.x, spot_table.y, strict=True)
    ]
    shared = table.index.intersection(spot_table.index)
    if len(shared) == 0:
        msg = (
            f"No spot of {counts.name} (e.g. {list(table.index[:3])}) matches {spots.name} "
            f"(e.g. {list(spot_table.index[:3])}); rows must be named '<x>x<y>'."
        )
        raise KbfmInputError(msg)
    without_counts = spot_table.index.difference(table.index)
    if len(without_counts):
        examples = ", ".join(sorted(without_counts)[:5])
        logger.warning(
            "%d of %d selected spots in %s have no row in %s and are left out (e.g. %s).",
            len(without_counts),
            len(spot_table),
            spots.name,
            counts.name,
            examples,
        )
    table, spot_table = table.loc[shared], spot_table.loc[shared]
    adata = AnnData(sp.csr_matrix(table.to_numpy(dtype=np.float32)))
    adata.obs_names = list(shared)
    adata.var_names = table.columns.astype(str)
    adata.var_names_make_unique()
    adata.obs["array_x"] = spot_table["x"].to_numpy(int)
    adata.obs["array_y"] = spot_table["y"].to_numpy(int)
    adata.obsm[SPATIAL_KEY] = spot_table[["pixel_x", "pixel_y"]].to_numpy(np.float64)
    library_id = library_id or counts.name.split(".")[0]
    from .patches import check_mpp

    mpp = check_mpp(mpp)
    if mpp is None:
        mpp, source = _grid_mpp(spot_table, spot_spacing_um), "spot_grid"
    else:
        source = "user"
    metadata = {
        "platform": "legacy_st",
        MPP_KEY: float(mpp),
        "mpp_source": source,
        "selected_spots_without_counts": sorted(without_counts),
    }
    scalefactors = {"spot_diameter_fullres": ST_SPOT_DIAMETER_UM / float(mpp)}
    images: dict[str, np.ndarray] = {}
    if image is not None:
        from .slide import open_slide

        slide = open_slide(image, mpp=mpp)
        w, h = slide.dimensions
        coords = adata.obsm[SPATIAL_KEY]
        off = (coords[:, 0] >= w) | (coords[:, 1] >= h) | (coords < 0).any(axis=1)
        if off.any():
            msg = (
                f"{int(off.sum())} spot centres lie outside the {w} x {h} image {slide.path.name}: "
                "the spot file and image do not match."
            )
            raise KbfmInputError(msg)
        thumb, scale = slide.thumbnail(thumbnail_size)
        slide.close()
        images["hires"] = thumb
        scalefactors["tissue_hires_scalef"] = scale
        metadata[SOURCE_IMAGE_KEY] = str(Path(image).expanduser().resolve())
        radius = scalefactors["spot_diameter_fullres"] * scale / 2
        fraction = on_tissue_fraction(thumb, coords * scale, radius)
        metadata["spots_on_tissue_fraction"] = fraction
        warn_if_off_tissue(fraction, f"{Path(image).name}")
    adata.uns[SPATIAL_KEY] = {
        library_id: {"images": images, "scalefactors": scalefactors, "metadata": metadata}
    }
    adata.obs["library_id"] = pd.Categorical([library_id] * adata.n_obs)
    return adata
