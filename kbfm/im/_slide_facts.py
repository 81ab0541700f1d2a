"""What :func:`~kbfm.im.embed_image.embed_image` needs of a slide besides its patches.

Size, resolution metadata, the tissue mask of a thumbnail and (for ``stain_norm=
"reinhard"``) the fitted colour statistics. They are kept in the image cache, keyed by
the slide's content fingerprint, so a rerun whose embeddings are all cached never opens
or decodes the slide.
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._atomic import atomic_write
from ..io.patches import tissue_mask
from ..io.slide import Slide

logger = logging.getLogger(__name__)

_VERSION = 1
#: ``mpp_source`` of facts saved from a Slide whose mpp the user set: the file's own
#: resolution metadata was not seen, so it cannot stand in for it.
UNREAD = "unread"


@dataclass
class SlideFacts:
    """A slide's size, resolution, tissue mask and fitted stain statistics.

    Attributes
    ----------
    path
        The file (as given this time; the facts belong to its content).
    fingerprint
        :func:`~kbfm.io.slide.file_fingerprint` of the file.
    dimensions
        ``(width, height)`` of level 0.
    mpp, mpp_source
        Microns per pixel and where they came from (the file's metadata until resolved
        for one call; ``"unread"``: the metadata was not seen).
    mask, scale
        Tissue mask of a thumbnail and thumbnail pixels per level-0 pixel.
    reinhard
        Fitted :class:`~kbfm.im._stain.ReinhardNormalizer` statistics (12 values:
        source mean and std, target mean and std), or ``None`` until first needed.
    """

    path: Path
    fingerprint: str
    dimensions: tuple[int, int]
    mpp: float | None
    mpp_source: str
    mask: np.ndarray
    scale: float
    reinhard: np.ndarray | None = None

    @classmethod
    def of(cls, slide: Slide) -> SlideFacts:
        """Read the facts of an open slide (decodes a thumbnail for the tissue mask)."""
        mask, scale = tissue_mask(slide)
        source = UNREAD if slide.mpp_source == "user" else slide.mpp_source
        mpp = None if source == UNREAD else slide.mpp
        return cls(slide.path, slide.fingerprint, slide.dimensions, mpp, source, mask, scale)

    def require_mpp(self) -> float:
        """Return :attr:`mpp`; a :class:`LookupError` when the facts do not know it."""
        if self.mpp is None:
            raise LookupError(self.path)
        return self.mpp

    def normalizer(self):
        """The fitted :class:`~kbfm.im._stain.ReinhardNormalizer`, or ``None``."""
        from ._stain import ReinhardNormalizer

        if self.reinhard is None:
            return None
        return ReinhardNormalizer(*np.split(np.asarray(self.reinhard, dtype=np.float64), 4))

    def fit_stain(self, slide: Slide):
        """Fit the Reinhard statistics on ``slide``'s thumbnail; return the normalizer."""
        from ._stain import ReinhardNormalizer

        thumb, _ = slide.thumbnail(2048)
        fitted = ReinhardNormalizer.fit(thumb, self.mask)
        parts = (fitted.source_mean, fitted.source_std, fitted.target_mean, fitted.target_std)
        self.reinhard = np.concatenate([np.asarray(p, dtype=np.float64) for p in parts])
        return fitted


def _facts_file(root: Path, fingerprint: str) -> Path:
    return Path(root) / "slides" / f"{fingerprint}.npz"


def load_facts(root: Path, fingerprint: str, path: Path) -> SlideFacts | None:
    """The facts saved under cache folder ``root`` for this fingerprint, or ``None``.

    An unreadable or foreign file is removed and reported as missing.
    """
    file = _facts_file(root, fingerprint)
    if not file.is_file():
        return None
    try:
        with np.load(file, allow_pickle=False) as saved:
            if int(saved["version"]) != _VERSION:
                return None
            shape = tuple(int(v) for v in saved["mask_shape"])
            bits = np.unpackbits(saved["mask"], count=shape[0] * shape[1])
            mpp = float(saved["mpp"])
            reinhard = saved["reinhard"]
            return SlideFacts(
                path=path,
                fingerprint=fingerprint,
                dimensions=(int(saved["dimensions"][0]), int(saved["dimensions"][1])),
                mpp=None if np.isnan(mpp) else mpp,
                mpp_source=str(saved["mpp_source"]),
                mask=bits.reshape(shape).astype(bool),
                scale=float(saved["scale"]),
                reinhard=reinhard if reinhard.size == 12 else None,
            )
    except (OSError, ValueError, KeyError, IndexError, zipfile.BadZipFile) as err:
        logger.info("Ignoring unreadable slide facts %s (%s); recomputing.", file, err)
        file.unlink(missing_ok=True)
        return None


def save_facts(root: Path, facts: SlideFacts) -> None:
    """Save ``facts`` under cache folder ``root`` atomically; an unwritable cache is skipped."""
    arrays = {
        "version": np.array(_VERSION),
        "dimensions": np.asarray(facts.dimensions, dtype=np.int64),
        "mpp": np.array(np.nan if facts.mpp is None else float(facts.mpp)),
        "mpp_source": np.array(facts.mpp_source),
        "mask": np.packbits(np.asarray(facts.mask, dtype=bool).ravel()),
        "mask_shape": np.asarray(facts.mask.shape, dtype=np.int64),
        "scale": np.array(float(facts.scale)),
        "reinhard": np.asarray([] if facts.reinhard is None else facts.reinhard, np.float64),
    }

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    try:
        atomic_write(_facts_file(root, facts.fingerprint), write, sweep=False)
    except OSError as err:
        logger.info("Slide facts not cached (%s).", err.strerror or err)
