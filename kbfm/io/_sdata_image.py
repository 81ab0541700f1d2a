"""SpatialData image elements as files kbfm's patch code reads, and back.

An image element (a ``DataArray`` or multiscale ``DataTree`` with dims c, y, x) is written
band by band to a tiled pyramidal TIFF with its resolution, so
:func:`kbfm.im.embed_image` reads it through OpenSlide like any slide, and a slide is
wrapped as a lazy dask array for a new SpatialData store.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import KbfmInputError
from .._settings import settings

logger = logging.getLogger(__name__)

_TILE = 256
_EXPORT_VERSION = "kbfm-sdata-tiff-1"


def image_levels(image: Any) -> list[Any]:
    """Pyramid levels (``DataArray`` with dims c, y, x), finest first."""
    from spatialdata import get_pyramid_levels
    from xarray import DataTree

    levels = get_pyramid_levels(image) if isinstance(image, DataTree) else [image]
    if tuple(levels[0].dims) != ("c", "y", "x"):
        msg = f"Only 2-d images with dims ('c', 'y', 'x') are supported, got {levels[0].dims}."
        raise KbfmInputError(msg)
    return levels


def _rgb(band: np.ndarray, name: str) -> np.ndarray:
    """A (c, y, x) block as (y, x, 3) uint8: RGB(A), or one channel repeated."""
    c = band.shape[0]
    if c not in (1, 3, 4):
        msg = (
            f"Image {name!r} has {c} channels; H&E patches need an RGB image (3 channels, or 1 "
            "grey channel). Pass image_key= of the H&E image."
        )
        raise KbfmInputError(msg)
    band = np.repeat(band, 3, axis=0) if c == 1 else band[:3]
    if band.dtype != np.uint8:
        if np.issubdtype(band.dtype, np.floating):
            band = np.clip(band * (255.0 if band.max(initial=0) <= 1.0 else 1.0), 0, 255)
        elif np.issubdtype(band.dtype, np.integer) and band.dtype.itemsize > 1:
            band = band.astype(np.float64) * (255.0 / np.iinfo(band.dtype).max)
        band = band.round().astype(np.uint8)
    return np.moveaxis(band, 0, -1)


def _bands(level: Any, name: str):
    """Yield (y0, rgb band of _TILE rows) over one pyramid level, computed one band at a time."""
    data = level.data
    for y0 in range(0, data.shape[1], _TILE):
        yield y0, _rgb(np.asarray(data[:, y0 : y0 + _TILE, :]), name)


def _tiles(level: Any, name: str):
    for _, band in _bands(level, name):
        h, w = band.shape[:2]
        for x0 in range(0, w, _TILE):
            tile = np.zeros((_TILE, _TILE, 3), np.uint8)
            tile[:h, : min(_TILE, w - x0)] = band[:, x0 : x0 + _TILE]
            yield tile


def _pyramid(levels: list[Any]) -> list[Any]:
    """Levels to write: the element's own pyramid, else 2x means down to ~1,024 px."""
    if len(levels) > 1:
        return levels
    out = [levels[0]]
    while max(out[-1].shape[1:]) > 1024:
        out.append(out[-1].coarsen(y=2, x=2, boundary="trim").mean().astype(levels[0].dtype))
    return out


def _export_key(element: Any, levels: list[Any], name: str) -> str:
    """Cache key: backing files (names, sizes, mtimes) of a lazy image, else its pixels."""
    from spatialdata import get_dask_backing_files

    h = hashlib.blake2b(digest_size=16)
    h.update(f"{_EXPORT_VERSION}|{[tuple(lv.shape) for lv in levels]}|{levels[0].dtype}".encode())
    files = sorted(get_dask_backing_files(element)) if hasattr(levels[0].data, "dask") else []
    if files:
        h.update(name.encode())
        for root in files:
            for folder, _, names in sorted(os.walk(root)):
                for f in sorted(names):
                    st = Path(folder, f).stat()
                    h.update(f"{folder}/{f}|{st.st_size}|{st.st_mtime_ns}".encode())
    else:
        for _, band in _bands(levels[0], name):
            h.update(band.tobytes())
    return h.hexdigest()


def export_tiff(element: Any, name: str, mpp: float | None, out: Path | None) -> Path:
    """Write an image element as a tiled pyramidal TIFF (once; reused while unchanged).

    Parameters
    ----------
    element
        The image element (single-scale ``DataArray`` or multiscale ``DataTree``).
    name
        Its name, for messages.
    mpp
        Microns per level-0 pixel, written as the TIFF resolution (``None``: none).
    out
        Destination; default ``settings.cache_dir / "spatialdata" / <key>.tif``, where the
        key covers the pixels (or, for a lazily read element, its backing files' names,
        sizes and modification times), so an unchanged image is written only once.

    Returns
    -------
    The TIFF path. Level 0 holds the element's full-resolution pixels unchanged; lower
    levels are the element's own pyramid, or 2x means down to about 1,024 px.
    """
    import tifffile

    from .._atomic import atomic_write

    levels = _pyramid(image_levels(element))
    path = out or settings.cache_dir / "spatialdata" / f"{_export_key(element, levels, name)}.tif"
    if out is None and path.exists():
        return path
    width0 = levels[0].shape[2]

    def write(tmp: str) -> None:
        with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
            for i, level in enumerate(levels):
                _, h, w = level.shape
                extra = {}
                if mpp is not None:
                    res = 1e4 / (mpp * width0 / w)  # pixels per centimetre at this level
                    extra = {"resolution": (res, res), "resolutionunit": "CENTIMETER"}
                tif.write(
                    _tiles(level, name),
                    shape=(h, w, 3),
                    dtype=np.uint8,
                    tile=(_TILE, _TILE),
                    photometric="rgb",
                    compression="zlib",
                    subfiletype=0 if i == 0 else 1,
                    **extra,
                )

    logger.info("Writing image %r as a tiled TIFF: %s", name, path)
    return atomic_write(path, write)


def thumbnail(tiff: Path, max_px: int) -> tuple[np.ndarray, float]:
    """Return an RGB thumbnail of an exported TIFF and its scale.

    The thumbnail is at most ``max_px`` on its longest side, read from the pyramid; the
    scale is thumbnail pixels per level-0 pixel.
    """
    from .slide import open_slide

    slide = open_slide(tiff)
    try:
        image, _ = slide.thumbnail(max_px)
    finally:
        slide.close()
    return image, image.shape[1] / slide.dimensions[0]


def channels_first(image: np.ndarray) -> np.ndarray:
    """A (y, x, c) thumbnail from uns['spatial'] as (c, y, x) uint8 RGB."""
    image = np.asarray(image)
    image = image[..., None] if image.ndim == 2 else image[..., :3]
    if image.dtype != np.uint8:
        scale = 255.0 if image.max(initial=0) <= 1.0 else 1.0
        image = np.clip(image * scale, 0, 255).round().astype(np.uint8)
    return np.moveaxis(image, -1, 0)


def slide_as_dask(path: str):
    """The level 0 of a slide as a lazy (3, y, x) uint8 dask array read tile by tile."""
    import dask.array as da

    from .slide import open_slide

    slide = open_slide(path)
    w, h = slide.dimensions
    tile = 4096

    def read(block_info=None):
        (_, _), (y0, y1), (x0, x1) = block_info[None]["array-location"]
        return np.moveaxis(slide.read_region((x0, y0), (x1 - x0, y1 - y0)), -1, 0)

    def splits(n: int) -> tuple[int, ...]:
        return tuple(min(tile, n - s) for s in range(0, n, tile))

    chunks = ((3,), splits(h), splits(w))
    image = da.map_blocks(read, chunks=chunks, dtype=np.uint8, meta=np.empty((0, 0, 0), np.uint8))
    n_levels = max(0, int(np.floor(np.log2(max(w, h) / 1024))))
    return image, [2] * n_levels
