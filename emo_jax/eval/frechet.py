"""The Frechet distance between two sets of features, each summarised as a Gaussian (FID, FVD, E-FID).

    d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))

computed as pytorch-fid and torch-fidelity compute it (float64, `scipy.linalg.sqrtm` of the product, a small
ridge added to both covariances when the root is not finite, the imaginary part of the root dropped when it is
negligible), so a number from here is the number those tools give on the same features.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

RIDGE = 1e-6  # added to both covariances' diagonals when the product's square root is not finite
IMAGINARY_TOLERANCE = 1e-3  # largest imaginary part on the root's diagonal that counts as rounding


@dataclasses.dataclass(frozen=True)
class Gaussian:
    """Mean [D] and covariance [D, D] of a feature set (float64)."""

    mean: np.ndarray
    covariance: np.ndarray
    count: int

    @classmethod
    def of(cls, features: np.ndarray) -> Gaussian:
        """features [N, D] -> their mean and unbiased covariance (N - 1), as the reference tools take them."""
        features = np.asarray(features, np.float64)
        if features.ndim != 2 or len(features) < 2:
            raise ValueError(f"features must be [N >= 2, D], got shape {features.shape}")
        return cls(features.mean(0), np.cov(features, rowvar=False), len(features))


def frechet_distance(a: Gaussian, b: Gaussian) -> float:
    """d^2 between two Gaussians (the value FID and FVD report)."""
    from scipy import linalg

    if a.mean.shape != b.mean.shape:
        raise ValueError(f"feature sizes differ: {a.mean.shape[0]} and {b.mean.shape[0]}")
    difference = a.mean - b.mean
    with warnings.catch_warnings():  # a singular product (fewer samples than features) is handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(a.covariance @ b.covariance)
    if not np.isfinite(root).all():
        ridge = RIDGE * np.eye(len(a.mean))
        root = linalg.sqrtm((a.covariance + ridge) @ (b.covariance + ridge))
    if np.iscomplexobj(root):
        largest = np.abs(np.diagonal(root).imag).max()
        if largest > IMAGINARY_TOLERANCE:
            raise ValueError(f"the covariances' product has no real square root (imaginary part {largest:.3g})")
        root = root.real
    distance = difference @ difference + np.trace(a.covariance) + np.trace(b.covariance) - 2 * np.trace(root)
    return float(distance)
