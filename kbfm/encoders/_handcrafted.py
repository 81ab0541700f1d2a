"""Colour and texture features of H&E patches (the non-learned baseline encoder)."""

from __future__ import annotations

import numpy as np

# Ruifrok & Johnston optical-density vectors of haematoxylin and eosin (rows), normalised.
_HE = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]])
_HE = _HE / np.linalg.norm(_HE, axis=1, keepdims=True)
_LEVELS = 16
_OFFSETS = ((0, 1), (1, 0), (0, 2), (2, 0))
_SIZE = 112  # patches are reduced to this side before texture statistics


def _glcm_stats(grey: np.ndarray) -> list[float]:
    q = np.minimum((grey.astype(np.float32) / 256.0 * _LEVELS).astype(np.int64), _LEVELS - 1)
    i, j = np.meshgrid(np.arange(_LEVELS), np.arange(_LEVELS), indexing="ij")
    stats: list[float] = []
    for dy, dx in _OFFSETS:
        a = q[: q.shape[0] - dy, : q.shape[1] - dx].ravel()
        b = q[dy:, dx:].ravel()
        glcm = np.bincount(a * _LEVELS + b, minlength=_LEVELS**2).reshape(_LEVELS, _LEVELS)
        glcm = glcm + glcm.T
        p = glcm / max(glcm.sum(), 1)
        mu = (i * p).sum()
        var = ((i - mu) ** 2 * p).sum()
        stats += [
            float(((i - j) ** 2 * p).sum()) / _LEVELS**2,  # contrast
            float((p / (1.0 + np.abs(i - j))).sum()),  # homogeneity
            float((p**2).sum()),  # energy
            float(((i - mu) * (j - mu) * p).sum() / var) if var > 0 else 0.0,  # correlation
        ]
    return stats


def color_texture_features(patch: np.ndarray) -> np.ndarray:
    """Hand-made features of one RGB patch.

    Per-channel 16-bin colour histograms (48), channel means and standard deviations (6),
    haematoxylin/eosin optical-density means and standard deviations (4), grey-level
    co-occurrence statistics at four offsets (16) and gradient-magnitude statistics (10).

    Parameters
    ----------
    patch
        ``uint8`` array of shape ``(H, W, 3)``.

    Returns
    -------
    ``float32`` vector of length 84.

    Examples
    --------
    >>> import numpy as np
    >>> color_texture_features(np.zeros((32, 32, 3), np.uint8)).shape
    (84,)
    """
    from PIL import Image

    if patch.shape[0] != _SIZE or patch.shape[1] != _SIZE:
        patch = np.asarray(Image.fromarray(patch).resize((_SIZE, _SIZE), Image.BILINEAR))
    rgb = patch.astype(np.float32)
    feats: list[float] = []
    for c in range(3):
        hist, _ = np.histogram(rgb[..., c], bins=16, range=(0, 256))
        feats += list(hist / rgb[..., c].size)
    feats += list(rgb.reshape(-1, 3).mean(0) / 255.0) + list(rgb.reshape(-1, 3).std(0) / 255.0)
    od = -np.log((rgb.reshape(-1, 3) + 1.0) / 256.0)
    stains = od @ np.linalg.pinv(_HE)
    feats += list(stains.mean(0)) + list(stains.std(0))
    grey = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    feats += _glcm_stats(grey)
    gy, gx = np.gradient(grey)
    mag = np.hypot(gx, gy) / 255.0
    hist, _ = np.histogram(mag, bins=8, range=(0, 0.5))
    feats += [float(mag.mean()), float(mag.std()), *list(hist / mag.size)]
    return np.asarray(feats, dtype=np.float32)
