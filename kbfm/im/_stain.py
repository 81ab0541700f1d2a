"""Reinhard colour normalisation of H&E patches in lαβ space, fitted once per slide."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_RGB2LMS = np.array([[0.3811, 0.5783, 0.0402], [0.1967, 0.7244, 0.0782], [0.0241, 0.1288, 0.8444]])
_LMS2LAB = np.diag([1 / np.sqrt(3), 1 / np.sqrt(6), 1 / np.sqrt(2)]) @ np.array(
    [[1, 1, 1], [1, 1, -2], [1, -1, 0]]
)
_LMS2RGB = np.linalg.inv(_RGB2LMS)
_LAB2LMS = np.linalg.inv(_LMS2LAB)
#: Tissue statistics (lαβ mean and std) of a typical H&E section (HER2ST C2 tissue pixels).
DEFAULT_TARGET = (
    np.array([-0.521, -0.0943, -0.0010]),
    np.array([0.196, 0.0446, 0.0079]),
)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """Reinhard lαβ of ``uint8`` RGB pixels (any leading shape, last axis 3)."""
    lms = np.maximum(rgb.astype(np.float64) / 255.0, 1e-4) @ _RGB2LMS.T
    return np.log10(np.maximum(lms, 1e-4)) @ _LMS2LAB.T


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_lab`, clipped to ``uint8``."""
    lms = 10.0 ** (lab @ _LAB2LMS.T)
    return np.clip(lms @ _LMS2RGB.T * 255.0, 0, 255).round().astype(np.uint8)


@dataclass
class ReinhardNormalizer:
    """Map a slide's tissue colour statistics onto a target's.

    Attributes
    ----------
    source_mean, source_std
        lαβ statistics of the slide's tissue pixels.
    target_mean, target_std
        lαβ statistics to map onto (default :data:`DEFAULT_TARGET`).

    Examples
    --------
    >>> import numpy as np
    >>> img = np.full((8, 8, 3), (200, 120, 180), np.uint8)
    >>> norm = ReinhardNormalizer.fit(img, np.ones((8, 8), bool))
    >>> norm(img).shape
    (8, 8, 3)
    """

    source_mean: np.ndarray
    source_std: np.ndarray
    target_mean: np.ndarray
    target_std: np.ndarray

    @classmethod
    def fit(
        cls,
        image: np.ndarray,
        mask: np.ndarray,
        target: tuple[np.ndarray, np.ndarray] = DEFAULT_TARGET,
    ) -> ReinhardNormalizer:
        """Estimate the source statistics from the tissue pixels ``image[mask]``."""
        pixels = image[mask] if mask.any() else image.reshape(-1, 3)
        lab = rgb_to_lab(pixels.reshape(-1, 3))
        return cls(lab.mean(0), np.maximum(lab.std(0), 1e-6), target[0], target[1])

    def key(self) -> str:
        """Text identifying the fitted statistics (for cache keys)."""
        values = np.concatenate(
            [self.source_mean, self.source_std, self.target_mean, self.target_std]
        )
        return "reinhard:" + ",".join(f"{v:.5g}" for v in values)

    def __call__(self, patch: np.ndarray) -> np.ndarray:
        """Return the normalised ``uint8`` patch."""
        lab = rgb_to_lab(patch)
        lab = (lab - self.source_mean) / self.source_std * self.target_std + self.target_mean
        return lab_to_rgb(lab)
