"""Open histology images: whole-slide formats through openslide, plain images through PIL.

:func:`open_slide` returns a :class:`Slide` that reads regions in level-0 pixel
coordinates, whatever the backend. OpenSlide (svs, tiff, ndpi, mrxs, scn, DICOM, ...)
reads tiles lazily from the pyramid, so a 100k x 100k slide is never held in memory.
Plain JPEG/PNG/TIFF images without a pyramid go through PIL: they are decoded whole on
first read, so images above ``max_pixels``, or whose decoding would not fit in the
memory available (the machine's or the container's limit), are refused before decoding,
with a hint to convert them to a tiled pyramidal TIFF.

Microns per pixel (mpp) come from, in order: the ``mpp=`` argument, the slide metadata
(``openslide.mpp-x`` or TIFF resolution tags), or stay ``None``; readers that know the
spot size (:func:`~kbfm.io.visium.read_visium`, :func:`~kbfm.io.legacy_st.read_legacy_st`)
derive it from the spot diameter or grid.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from .._errors import KbfmInputError
from .._memory import available_memory

#: PIL-decoded images larger than this many pixels are refused (about 4.5 GB of RGB).
MAX_PIL_PIXELS = 1_500_000_000
#: Peak copies of the RGB array while PIL decodes and converts a plain image; an image
#: whose decoding would not fit in the memory available is refused before decoding.
DECODE_COPIES = 3.5  # measured: 2.36 GB peak RSS for a 15000^2 PNG (0.68 GB of RGB)
#: Plausible range of microns per pixel for a histology scan; metadata outside it
#: (e.g. a 72-dpi default written by an image library) is ignored.
MPP_RANGE = (0.05, 50.0)
_FINGERPRINT_BYTES = 4 << 20


def _plausible_mpp(value: object) -> float | None:
    try:
        mpp = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return mpp if MPP_RANGE[0] <= mpp <= MPP_RANGE[1] else None


def file_fingerprint(path: str | os.PathLike) -> str:
    """Return a SHA-256 of a file's size and its first and last 4 MiB.

    Cheap enough for multi-GB slides and changes whenever the file is replaced by
    another scan; used in image-embedding cache keys.

    Parameters
    ----------
    path
        File to fingerprint (a folder, e.g. DICOM, is fingerprinted by its file list).

    Returns
    -------
    Hex digest.

    Examples
    --------
    >>> import tempfile
    >>> p = tempfile.NamedTemporaryFile(delete=False).name
    >>> len(file_fingerprint(p))
    64
    """
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        for child in sorted(path.iterdir()):
            h.update(child.name.encode())
            h.update(file_fingerprint(child).encode() if child.is_file() else b"")
        return h.hexdigest()
    size = path.stat().st_size
    h.update(size.to_bytes(8, "little"))
    with path.open("rb") as fh:
        h.update(fh.read(_FINGERPRINT_BYTES))
        if size > 2 * _FINGERPRINT_BYTES:
            fh.seek(size - _FINGERPRINT_BYTES)
            h.update(fh.read())
    return h.hexdigest()


class Slide:
    """A histology image with level-0 pixel coordinates and optional microns per pixel.

    Use :func:`open_slide` to build one.

    Attributes
    ----------
    path
        The file.
    backend
        ``"openslide"`` or ``"pil"``.
    dimensions
        ``(width, height)`` of level 0.
    level_dimensions, level_downsamples
        Pyramid levels (a single level for PIL images).
    mpp
        Microns per level-0 pixel, or ``None`` when unknown.
    mpp_source
        Where :attr:`mpp` came from: ``"user"``, ``"metadata"`` or ``"unknown"``.
    """

    def __init__(self, path: Path, backend: str, handle: object, mpp: float | None, source: str):
        self.path = path
        self.backend = backend
        self._handle = handle
        self._array: np.ndarray | None = None
        self.mpp = mpp
        self.mpp_source = source
        self._fingerprint: str | None = None
        if backend == "openslide":
            self.level_dimensions = tuple(handle.level_dimensions)  # type: ignore[attr-defined]
            self.level_downsamples = tuple(handle.level_downsamples)  # type: ignore[attr-defined]
        else:
            self.level_dimensions = (tuple(handle.size),)  # type: ignore[attr-defined]
            self.level_downsamples = (1.0,)
        self.dimensions: tuple[int, int] = tuple(self.level_dimensions[0])  # type: ignore[assignment]

    def __repr__(self) -> str:
        w, h = self.dimensions
        mpp = f"{self.mpp:.3f}" if self.mpp else "unknown"
        return (
            f"Slide({self.path.name!r}, {w}x{h} px, {len(self.level_dimensions)} level(s), "
            f"mpp={mpp} ({self.mpp_source}), backend={self.backend})"
        )

    @property
    def fingerprint(self) -> str:
        """Content fingerprint of the file (see :func:`file_fingerprint`)."""
        if self._fingerprint is None:
            self._fingerprint = file_fingerprint(self.path)
        return self._fingerprint

    def require_mpp(self) -> float:
        """Return :attr:`mpp`, or raise an error that says how to provide it."""
        if self.mpp is None:
            msg = (
                f"Microns per pixel of {self.path.name} are unknown: the file has no usable "
                "resolution metadata. Pass mpp= (e.g. open_slide(path, mpp=0.5) or "
                "embed_image(..., mpp=0.5)), or read the data with read_visium / "
                "read_legacy_st, which derive it from the spot size."
            )
            raise KbfmInputError(msg)
        return self.mpp

    def best_level(self, downsample: float) -> int:
        """Return the coarsest level whose downsample is at most ``downsample``."""
        best = 0
        for level, ds in enumerate(self.level_downsamples):
            if ds <= downsample * 1.0001:
                best = level
        return best

    def _pil_array(self) -> np.ndarray:
        if self._array is None:
            from PIL import Image

            old = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                # Opened only while decoding: a Slide holds no open file between reads.
                with Image.open(self.path) as image:
                    image.load()
                    if image.mode != "RGB":
                        with image.convert("RGB") as rgb:
                            self._array = np.asarray(rgb)
                    else:
                        self._array = np.asarray(image)
                # The array holds its own copy; PIL's buffers are freed on leaving the
                # with blocks, so at most two copies exist at once, not four.
            except (OSError, SyntaxError, ValueError) as err:
                msg = f"Could not decode {self.path}: the file is corrupt or truncated ({err})."
                raise KbfmInputError(msg) from err
            finally:
                Image.MAX_IMAGE_PIXELS = old
        return self._array

    def load(self) -> None:
        """Decode a PIL-backed image now (no-op for OpenSlide, which reads lazily)."""
        if self.backend == "pil":
            self._pil_array()

    def read_region(
        self, location: tuple[int, int], size: tuple[int, int], *, level: int = 0
    ) -> np.ndarray:
        """Read an RGB region; parts outside the image are white.

        Parameters
        ----------
        location
            ``(x, y)`` of the top-left corner in level-0 pixels (may be negative).
        size
            ``(width, height)`` in pixels of ``level``.
        level
            Pyramid level to read from.

        Returns
        -------
        ``uint8`` array of shape ``(height, width, 3)``.
        """
        x, y = (round(v) for v in location)
        w, h = (max(1, round(v)) for v in size)
        if self.backend == "openslide":
            try:
                rgba = np.asarray(self._handle.read_region((x, y), level, (w, h)))  # type: ignore[attr-defined]
            except Exception as err:
                msg = f"Could not read a region of {self.path}: corrupt or truncated ({err})."
                raise KbfmInputError(msg) from err
            alpha = rgba[..., 3:4].astype(np.float32) / 255.0
            rgb = rgba[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
            return rgb.round().astype(np.uint8)
        array = self._pil_array()
        height, width = array.shape[:2]
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, width), min(y + h, height)
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = array[y0:y1, x0:x1]
        return out

    def thumbnail(self, max_size: int = 2048) -> tuple[np.ndarray, float]:
        """Return a downsampled RGB copy and its scale (thumbnail px per level-0 px).

        Parameters
        ----------
        max_size
            Longest side of the thumbnail in pixels.

        Returns
        -------
        ``(image, scale)``.
        """
        from PIL import Image

        w, h = self.dimensions
        scale = min(1.0, max_size / max(w, h))
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        if self.backend == "openslide":
            level = self.best_level(1.0 / scale)
            lw, lh = self.level_dimensions[level]
            region = Image.fromarray(self.read_region((0, 0), (lw, lh), level=level))
        else:
            region = Image.fromarray(self._pil_array())
        return np.asarray(region.resize(size, Image.BILINEAR, reducing_gap=3.0)), scale

    def close(self) -> None:
        """Release the file handle and any decoded pixels (safe to call twice)."""
        close = getattr(self._handle, "close", None)
        if close is not None:
            close()
        self._array = None

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _openslide_mpp(handle: object) -> float | None:
    props = handle.properties  # type: ignore[attr-defined]
    mpp = _plausible_mpp(props.get("openslide.mpp-x"))
    if mpp is not None:
        return mpp
    return _tiff_mpp(props.get("tiff.XResolution"), props.get("tiff.ResolutionUnit"))


def _tiff_mpp(resolution: object, unit: object) -> float | None:
    try:
        res = float(resolution)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if res <= 0:
        return None
    per_unit_um = {"centimeter": 1e4, "3": 1e4, "inch": 25400.0, "2": 25400.0}.get(str(unit))
    return _plausible_mpp(per_unit_um / res) if per_unit_um else None


def _pil_mpp(image: object) -> float | None:
    tags = getattr(image, "tag_v2", None)
    if tags is None:  # JPEG/PNG dpi is usually a 72/96 default, never a scan resolution
        return None
    resolution = tags.get(282)
    unit = tags.get(296)
    return _tiff_mpp(float(resolution) if resolution is not None else None, unit)


def open_slide(
    path: str | os.PathLike,
    *,
    mpp: float | None = None,
    max_pixels: int = MAX_PIL_PIXELS,
) -> Slide:
    """Open a whole-slide image or a plain image.

    Parameters
    ----------
    path
        Slide (svs, tiff, ndpi, mrxs, scn, bif, DICOM, ...) or plain JPEG/PNG/TIFF image.
    mpp
        Microns per level-0 pixel; overrides the metadata.
    max_pixels
        Largest plain (non-pyramidal) image decoded whole through PIL. Smaller images
        are refused too when decoding them (about 10 bytes per pixel at peak) would not
        fit in the memory available.

    Returns
    -------
    A :class:`Slide`.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from PIL import Image
    >>> p = tempfile.mkdtemp() + "/he.png"
    >>> Image.fromarray(np.full((64, 80, 3), 200, np.uint8)).save(p)
    >>> open_slide(p, mpp=0.5).dimensions
    (80, 64)
    """
    path = Path(path).expanduser()
    if not path.exists():
        msg = f"Slide file not found: {path}."
        raise KbfmInputError(msg)
    if mpp is not None and _plausible_mpp(mpp) is None:
        msg = f"mpp={mpp} is outside the plausible range {MPP_RANGE} microns per pixel."
        raise KbfmInputError(msg)
    slide = _open_with_openslide(path)
    if slide is None:
        slide = _open_with_pil(path, max_pixels)
    if mpp is not None:
        slide.mpp, slide.mpp_source = float(mpp), "user"
    return slide


def _open_with_openslide(path: Path) -> Slide | None:
    try:
        import openslide
    except ImportError:
        return None
    try:
        fmt = openslide.OpenSlide.detect_format(str(path))
    except Exception:  # noqa: BLE001 (not a format OpenSlide knows: PIL tries next)
        fmt = None
    if fmt is None:
        return None
    try:
        handle = openslide.OpenSlide(str(path))
    except openslide.OpenSlideError as err:
        msg = (
            f"OpenSlide recognised {path.name} as {fmt} but could not open it: "
            f"corrupt or truncated ({err})."
        )
        raise KbfmInputError(msg) from err
    mpp = _openslide_mpp(handle)
    return Slide(path, "openslide", handle, mpp, "metadata" if mpp else "unknown")


def _open_with_pil(path: Path, max_pixels: int) -> Slide:
    from PIL import Image, UnidentifiedImageError

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        image = Image.open(path)
    except (UnidentifiedImageError, OSError) as err:
        msg = (
            f"{path.name} is neither a slide OpenSlide can open nor an image PIL can read "
            f"(corrupt, truncated or unsupported): {err}"
        )
        raise KbfmInputError(msg) from err
    finally:
        Image.MAX_IMAGE_PIXELS = old
    w, h = image.size
    need = int(w * h * 3 * DECODE_COPIES)
    free = available_memory()
    too_big = w * h > max_pixels or (free is not None and need > free)
    if too_big:
        image.close()
        why = (
            f"more than max_pixels={max_pixels:,}"
            if w * h > max_pixels
            else f"only ~{free / 2**30:.1f} GiB of memory is available here"
        )
        msg = (
            f"{path.name} is a plain {w} x {h} image ({w * h / 1e9:.2f} Gpx) without a pyramid; "
            f"reading any patch decodes it whole (~{need / 2**30:.1f} GiB with copies) and "
            f"{why}. Convert it to a tiled pyramidal TIFF (e.g. `vips tiffsave in.png out.tif "
            "--tile --pyramid --compression jpeg`), which is read tile by tile."
        )
        raise KbfmInputError(msg)
    mpp = _pil_mpp(image)
    header = _ImageHeader(tuple(image.size))
    image.close()  # pixels are decoded on first read, from the path
    return Slide(path, "pil", header, mpp, "metadata" if mpp else "unknown")


class _ImageHeader:
    """What a PIL-backed :class:`Slide` keeps of the image before decoding: its size."""

    def __init__(self, size: tuple[int, int]):
        self.size = size
