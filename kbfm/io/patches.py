"""Patches of fixed physical size around spot centres, tissue detection and tiling.

A :class:`PatchSpec` says how large a patch is in microns (``size_px * mpp``) and how many
pixels it has after resizing. The default, 224 px at 0.5 µm/px (112 µm), is the
HEST-Benchmark patch. Each patch is read from the pyramid level closest to (and not
coarser than) the target resolution, then resized; the part of a patch outside the image
is white and its fraction is returned, so border spots can be flagged.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .._errors import KbfmInputError
from .slide import Slide


def check_mpp(value: float | None, name: str = "mpp") -> float | None:
    """Return ``value`` as a float, or raise unless it is a finite positive number.

    ``None`` passes through (the slide metadata or spot grid decides later).

    Examples
    --------
    >>> check_mpp(0.25)
    0.25
    """
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not math.isfinite(number) or number <= 0:
        msg = (
            f"{name} must be a positive number of microns per pixel (e.g. 0.25 for a 40x "
            f"scan, 0.5 for 20x), got {value!r}."
        )
        raise KbfmInputError(msg)
    return number


@dataclass(frozen=True)
class PatchSpec:
    """Geometry of one patch.

    Attributes
    ----------
    size_px
        Side of the output patch in pixels.
    mpp
        Microns per pixel of the output patch; the field of view is ``size_px * mpp`` µm.

    Examples
    --------
    >>> PatchSpec().field_um
    112.0
    >>> PatchSpec().with_context(2.0).field_um
    224.0
    """

    size_px: int = 224
    mpp: float = 0.5

    def __post_init__(self) -> None:
        if int(self.size_px) < 8 or not (0.01 <= float(self.mpp) <= 100):
            msg = f"PatchSpec needs size_px >= 8 and 0.01 <= mpp <= 100, got {self}."
            raise KbfmInputError(msg)

    @property
    def field_um(self) -> float:
        """Side of the field of view in microns."""
        return float(self.size_px) * float(self.mpp)

    def with_context(self, factor: float) -> PatchSpec:
        """Same pixel size, ``factor`` times the field of view (coarser resolution)."""
        return PatchSpec(self.size_px, float(self.mpp) * float(factor))

    def key(self) -> str:
        """Short text describing the geometry, used in cache keys."""
        return f"{int(self.size_px)}px@{float(self.mpp):.6g}mpp"


def check_centers(slide: Slide, centers: np.ndarray, *, what: str = "spot") -> np.ndarray:
    """Return ``centers`` as an ``(n, 2)`` float array, or raise if any lies off the image.

    Parameters
    ----------
    slide
        The image the centres refer to (level-0 pixels, ``x`` then ``y``).
    centers
        Array of shape ``(n, 2)``.
    what
        Word used in the error message.

    Returns
    -------
    The validated centres.
    """
    centers = np.asarray(centers, dtype=np.float64)
    if centers.ndim != 2 or centers.shape[1] != 2:
        msg = f"{what} centres must have shape (n, 2) as (x, y) pixels, got {centers.shape}."
        raise KbfmInputError(msg)
    if not np.isfinite(centers).all():
        msg = f"{int((~np.isfinite(centers)).any(axis=1).sum())} {what} centres are NaN/inf."
        raise KbfmInputError(msg)
    w, h = slide.dimensions
    outside = (
        (centers[:, 0] < 0) | (centers[:, 1] < 0) | (centers[:, 0] >= w) | (centers[:, 1] >= h)
    )
    if outside.any():
        idx = np.flatnonzero(outside)
        examples = ", ".join(f"#{i} ({centers[i, 0]:.0f}, {centers[i, 1]:.0f})" for i in idx[:3])
        msg = (
            f"{outside.sum()} of {len(centers)} {what} centres lie outside the "
            f"{w} x {h} image {slide.path.name} (e.g. {examples}). Coordinates must be "
            "level-0 pixels of this image: check the image/scalefactor pairing "
            "(obsm['spatial'] holds full-resolution pixels) or pass the matching image."
        )
        raise KbfmInputError(msg)
    return centers


def read_patch(
    slide: Slide, center: tuple[float, float], spec: PatchSpec
) -> tuple[np.ndarray, float]:
    """Read one patch centred on ``center``.

    Parameters
    ----------
    slide
        Source image with known :attr:`~kbfm.io.slide.Slide.mpp`.
    center
        ``(x, y)`` in level-0 pixels.
    spec
        Patch geometry.

    Returns
    -------
    ``(patch, pad_fraction)``: a ``(size_px, size_px, 3)`` uint8 array and the fraction
    of its area that lies outside the image (filled white).
    """
    from PIL import Image

    field0 = spec.field_um / slide.require_mpp()
    level = slide.best_level(field0 / spec.size_px)
    ds = slide.level_downsamples[level]
    x0, y0 = center[0] - field0 / 2.0, center[1] - field0 / 2.0
    read = max(1, round(field0 / ds))
    region = slide.read_region((round(x0), round(y0)), (read, read), level=level)
    if region.shape[0] != spec.size_px or region.shape[1] != spec.size_px:
        region = np.asarray(
            Image.fromarray(region).resize(
                (spec.size_px, spec.size_px), Image.BILINEAR, reducing_gap=2.0
            )
        )
    w, h = slide.dimensions
    inside_w = max(0.0, min(x0 + field0, w) - max(x0, 0.0))
    inside_h = max(0.0, min(y0 + field0, h) - max(y0, 0.0))
    return region, float(np.clip(1.0 - inside_w * inside_h / field0**2, 0.0, 1.0))


def extract_patches(
    slide: Slide, centers: np.ndarray, spec: PatchSpec | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read patches around many centres into memory.

    Parameters
    ----------
    slide
        Source image with known mpp.
    centers
        ``(n, 2)`` level-0 pixel centres (``x``, ``y``).
    spec
        Patch geometry (default 224 px at 0.5 µm/px).

    Returns
    -------
    ``(patches, pad_fraction)`` of shapes ``(n, size, size, 3)`` (uint8) and ``(n,)``.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from PIL import Image
    >>> from kbfm.io.slide import open_slide
    >>> p = tempfile.mkdtemp() + "/he.png"
    >>> Image.fromarray(np.full((300, 300, 3), 180, np.uint8)).save(p)
    >>> patches, pad = extract_patches(open_slide(p, mpp=0.5), np.array([[150, 150]]))
    >>> patches.shape, float(pad[0])
    ((1, 224, 224, 3), 0.0)
    """
    spec = spec or PatchSpec()
    centers = check_centers(slide, centers)
    out = np.empty((len(centers), spec.size_px, spec.size_px, 3), dtype=np.uint8)
    pad = np.empty(len(centers), dtype=np.float32)
    for i, (x, y) in enumerate(centers):
        out[i], pad[i] = read_patch(slide, (x, y), spec)
    return out, pad


def _otsu(values: np.ndarray) -> float:
    hist, edges = np.histogram(values, bins=256, range=(0.0, 1.0))
    p = hist.astype(np.float64) / max(hist.sum(), 1)
    omega = np.cumsum(p)
    mu = np.cumsum(p * (edges[:-1] + edges[1:]) / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu[-1] * omega - mu) ** 2 / (omega * (1 - omega))
    if not np.isfinite(between).any():  # a single grey level: nothing to separate
        return 0.0
    return float(edges[int(np.nanargmax(between)) + 1])


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation in [0, 1] of a uint8 RGB array."""
    rgb = rgb.astype(np.float32)
    mx, mn = rgb.max(axis=-1), rgb.min(axis=-1)
    return np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0)


def tissue_mask(slide: Slide, *, max_size: int = 2048) -> tuple[np.ndarray, float]:
    """Detect tissue with Otsu's threshold on the saturation of a thumbnail.

    Parameters
    ----------
    slide
        The image.
    max_size
        Longest side of the thumbnail the mask is computed on.

    Returns
    -------
    ``(mask, scale)``: boolean mask of the thumbnail and thumbnail px per level-0 px.
    """
    thumb, scale = slide.thumbnail(max_size)
    return saturation_mask(thumb), scale


def saturation_mask(rgb: np.ndarray, *, floor: float = 0.05) -> np.ndarray:
    """Tissue pixels of an RGB image: blurred saturation above Otsu's threshold (>= floor).

    The blur smooths nuclei/stroma texture into one tissue mode; ``floor`` keeps a blank
    image from being split into "tissue" by noise.
    """
    sat = box_blur(saturation(rgb), 7)
    return sat > max(_otsu(sat.ravel()), floor)


def box_blur(values: np.ndarray, size: int) -> np.ndarray:
    """Mean over a ``size`` x ``size`` window (edges use the part inside the image)."""
    r = size // 2
    h, w = values.shape
    integral = np.pad(values.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    y0 = np.clip(np.arange(h) - r, 0, h)[:, None]
    y1 = np.clip(np.arange(h) + r + 1, 0, h)[:, None]
    x0 = np.clip(np.arange(w) - r, 0, w)[None, :]
    x1 = np.clip(np.arange(w) + r + 1, 0, w)[None, :]
    total = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    return total / ((y1 - y0) * (x1 - x0))


def tissue_fraction(
    mask: np.ndarray, scale: float, centers: np.ndarray, radius_px: float
) -> np.ndarray:
    """Fraction of tissue pixels in a square of half-side ``radius_px`` around each centre.

    Parameters
    ----------
    mask, scale
        Output of :func:`tissue_mask`.
    centers
        ``(n, 2)`` level-0 pixel centres.
    radius_px
        Half-side of the square in level-0 pixels.

    Returns
    -------
    Array of shape ``(n,)`` in [0, 1].
    """
    integral = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    h, w = mask.shape
    r = max(radius_px * scale, 0.5)
    cx, cy = np.asarray(centers, dtype=np.float64).T * scale
    x0 = np.clip(np.floor(cx - r), 0, w).astype(int)
    x1 = np.clip(np.ceil(cx + r), 0, w).astype(int)
    y0 = np.clip(np.floor(cy - r), 0, h).astype(int)
    y1 = np.clip(np.ceil(cy + r), 0, h).astype(int)
    area = np.maximum((x1 - x0) * (y1 - y0), 1)
    total = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    return total / area


def tile_tissue(
    slide: Slide, spec: PatchSpec | None = None, *, min_tissue: float = 0.5, max_size: int = 2048
) -> np.ndarray:
    """Centres of a non-overlapping grid of patches that cover tissue (slides without spots).

    Parameters
    ----------
    slide
        Image with known mpp.
    spec
        Patch geometry; the grid step is one field of view.
    min_tissue
        Keep tiles whose tissue fraction (Otsu on saturation) is at least this.
    max_size
        Thumbnail size for tissue detection.

    Returns
    -------
    ``(n, 2)`` float array of level-0 pixel centres.
    """
    spec = spec or PatchSpec()
    field0 = spec.field_um / slide.require_mpp()
    w, h = slide.dimensions
    xs = np.arange(field0 / 2, w, field0)
    ys = np.arange(field0 / 2, h, field0)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    mask, scale = tissue_mask(slide, max_size=max_size)
    keep = tissue_fraction(mask, scale, grid, field0 / 2) >= min_tissue
    return grid[keep]


class PatchDataset:
    """Map-style dataset of patches for a ``torch.utils.data.DataLoader``.

    Each worker opens its own handle on the slide, so reading runs in parallel with the
    encoder. Items are ``(transform(patch), index)``.

    Parameters
    ----------
    slide
        An open :class:`~kbfm.io.slide.Slide` (its path and mpp are reused in workers).
    centers
        ``(n, 2)`` level-0 pixel centres, checked against the image bounds.
    spec
        Patch geometry.
    transform
        Callable from a uint8 ``(H, W, 3)`` array to the model input (default: identity).

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from PIL import Image
    >>> from kbfm.io.slide import open_slide
    >>> p = tempfile.mkdtemp() + "/he.png"
    >>> Image.fromarray(np.full((300, 300, 3), 180, np.uint8)).save(p)
    >>> ds = PatchDataset(open_slide(p, mpp=0.5), np.array([[150, 150]]))
    >>> ds[0][0].shape
    (224, 224, 3)
    """

    def __init__(
        self,
        slide: Slide,
        centers: np.ndarray,
        spec: PatchSpec | None = None,
        transform: Callable[[np.ndarray], object] | None = None,
    ) -> None:
        self.slide = slide
        self.centers = check_centers(slide, centers)
        self.spec = spec or PatchSpec()
        self.transform = transform
        slide.require_mpp()
        self._pid = os.getpid()
        if slide.backend == "pil":
            slide.load()  # decode once, before workers fork, so they share the pixels

    def __len__(self) -> int:
        return len(self.centers)

    def __getitem__(self, index: int) -> tuple[object, int]:
        x, y = self.centers[index]
        patch, _ = read_patch(self._slide(), (x, y), self.spec)
        return (self.transform(patch) if self.transform else patch), int(index)

    def _slide(self) -> Slide:
        # OpenSlide handles must not be shared across forked DataLoader workers.
        if self.slide.backend == "openslide" and os.getpid() != self._pid:
            from .slide import open_slide

            self.slide = open_slide(self.slide.path, mpp=self.slide.mpp)
            self._pid = os.getpid()
        return self.slide
