"""Spatial keys shared by the readers and image tools (scanpy/squidpy layout)."""

from __future__ import annotations

import warnings

import numpy as np
from anndata import AnnData

from .._errors import KbfmInputError, closest_names
from .._keys import SPATIAL_KEY

#: Below this share of spots on detected tissue, readers and embed_image warn of a
#: mismatch. Calibrated on HER2ST C2-C5 (benchmarks' data): aligned sections give
#: 0.99-1.0, and 0.72-0.83 when blended 90% towards white (pale, fatty tissue); spots
#: shifted by 40% of the image width give 0.11-0.34. Mirror images are not caught (the
#: tissue is often symmetric enough that 0.4-0.87 of mirrored spots still hit tissue).
MIN_ON_TISSUE = 0.5
#: A spot is on tissue when more than this share of its footprint is tissue.
SPOT_TISSUE_MIN = 0.1


def library_id_for(adata: AnnData, library_id: str | None = None) -> str:
    """Return the library id to use, or raise an error that lists the valid ones."""
    libraries = adata.uns.get(SPATIAL_KEY, {})
    if not isinstance(libraries, dict) or not libraries:
        msg = (
            "adata.uns['spatial'] is missing or empty: read the data with "
            "kbfm.io.read_visium or kbfm.io.read_legacy_st, or pass slide= and mpp=."
        )
        raise KbfmInputError(msg)
    if library_id is None:
        if len(libraries) > 1:
            msg = (
                "Unable to determine which library id to use. Please specify one from: "
                f"{sorted(libraries)}."
            )
            raise KbfmInputError(msg)
        return next(iter(libraries))
    if library_id not in libraries:
        msg = (
            f"library_id {library_id!r} not in adata.uns['spatial']; choose from "
            f"{sorted(libraries)}.{closest_names(library_id, libraries)}"
        )
        raise KbfmInputError(msg)
    return library_id


def library_metadata(adata: AnnData, library_id: str | None = None) -> dict:
    """Return ``uns['spatial'][library_id]['metadata']`` (empty dict when absent)."""
    lib = library_id_for(adata, library_id)
    return dict(adata.uns[SPATIAL_KEY][lib].get("metadata", {}))


def spatial_coords(adata: AnnData) -> np.ndarray:
    """Return ``obsm['spatial']`` as an ``(n, 2)`` float array, or raise naming the key."""
    if SPATIAL_KEY not in adata.obsm:
        msg = (
            "adata.obsm['spatial'] (spot centres in full-resolution pixels, x then y) is "
            "missing; read the data with kbfm.io.read_visium / read_legacy_st."
        )
        raise KbfmInputError(msg)
    try:
        coords = np.asarray(adata.obsm[SPATIAL_KEY], dtype=np.float64)
    except (TypeError, ValueError):
        msg = "adata.obsm['spatial'] must hold numbers (x, y per spot)."
        raise KbfmInputError(msg) from None
    if coords.ndim != 2 or coords.shape[1] < 2:
        msg = f"adata.obsm['spatial'] must have shape (n_obs, 2), got {coords.shape}."
        raise KbfmInputError(msg)
    coords = coords[:, :2]
    bad = ~np.isfinite(coords).all(axis=1)
    if bad.any():
        names = list(adata.obs_names[bad][:5])
        more = f" (+{int(bad.sum()) - 5} more)" if bad.sum() > 5 else ""
        msg = (
            f"adata.obsm['spatial'] holds NaN or infinite coordinates for {int(bad.sum())} "
            f"spot(s), e.g. {names}{more}; drop those spots (adata[mask].copy()) or fix "
            "their coordinates."
        )
        raise KbfmInputError(msg)
    return coords


def spots_with_tissue(per_spot_tissue: np.ndarray) -> float:
    """Share of spots whose footprint holds at least :data:`SPOT_TISSUE_MIN` tissue."""
    per_spot_tissue = np.asarray(per_spot_tissue, dtype=float)
    if per_spot_tissue.size == 0:
        return float("nan")
    return float((per_spot_tissue > SPOT_TISSUE_MIN).mean())


def on_tissue_fraction(
    image: np.ndarray, coords: np.ndarray, radius_px: float | None = None
) -> float:
    """Share of spots (centres in ``image`` pixels) whose footprint touches tissue.

    Tissue is blurred saturation above Otsu's threshold (floor 0.02, so pale, fatty
    sections still register); a spot counts as on tissue when more than
    :data:`SPOT_TISSUE_MIN` of the square of half-side ``radius_px`` (the spot radius in
    ``image`` pixels; 3 px by default) around it is tissue. The same rule decides
    ``embed_image``'s warning. NaN: no tissue seen (blank or greyscale image).
    """
    from .patches import saturation_mask, tissue_fraction

    rgb = image[..., :3] if image.dtype == np.uint8 else _to_uint8(image)
    mask = saturation_mask(rgb, floor=0.02)
    if mask.mean() < 0.01:
        return float("nan")
    radius = 3.0 if radius_px is None or radius_px <= 0 else float(radius_px)
    return spots_with_tissue(tissue_fraction(mask, 1.0, np.asarray(coords, float), radius))


def _to_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)[..., :3]
    scale = 255.0 if image.max() <= 1.0 else 1.0
    return np.clip(image * scale, 0, 255).astype(np.uint8)


def warn_if_off_tissue(fraction: float, where: str) -> None:
    """Warn that spots miss the tissue, which points at an image/scalefactor mismatch."""
    if np.isfinite(fraction) and fraction < MIN_ON_TISSUE:
        warnings.warn(
            f"Only {fraction:.0%} of spots land on tissue in {where}: the image "
            "and the spot coordinates / scale factors probably do not belong together "
            "(wrong image, wrong scalefactors_json.json, or a flipped/rotated image).",
            UserWarning,
            stacklevel=3,
        )
