"""MRI-calibrated intensity transforms (image only, deterministic from their parameters): bias field, simulated low
resolution, contrast and gamma. Each returns a new array of the input's shape and dtype."""

from __future__ import annotations

import numpy as np
from numpy.polynomial import polynomial
from scipy import ndimage

from spine_keras.augment.params import bias_terms


def bias_field(shape: tuple[int, ...], order: int, coefficients: tuple[float, ...]) -> np.ndarray:
    """exp(sum_k c_k * prod_axis x_axis ** e_k,axis) over the terms of bias_terms(order, ndim), float32.

    As TorchIO's RandomBiasField (a polynomial log field, after Van Leemput et al. 1999): each axis's coordinate runs
    from -1 to 1 over the voxel centres, so the field is smooth at any size and positive everywhere.
    """
    terms = bias_terms(order, len(shape))
    if len(coefficients) != len(terms):
        raise ValueError(f"a bias field of order {order} in {len(shape)}D takes {len(terms)} coefficients")
    table = np.zeros((order + 1,) * len(shape))
    for coefficient, exponents in zip(coefficients, terms):
        table[exponents] = coefficient
    axes = [np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1) for n in shape]
    grid = polynomial.polygrid2d if len(shape) == 2 else polynomial.polygrid3d
    return np.exp(grid(*axes, table).astype(np.float32))


def apply_bias_field(image: np.ndarray, field: np.ndarray) -> np.ndarray:
    """(image - min) * field + min: the field multiplies the signal above the image's floor, which stays put.

    Normalized MRI (z-score) is negative in the background; multiplying it directly would darken the background
    where the field brightens the anatomy. Shifting by the minimum treats the floor as zero signal, as in a scan.
    """
    floor = image.min()
    return ((image - floor) * field + floor).astype(image.dtype, copy=False)


def low_resolution(image: np.ndarray, factors: tuple[float, ...], order: int = 1) -> np.ndarray:
    """Downsample each axis by its factor (nearest neighbour), then back to the image's shape (order 1: linear).

    Axes whose downsampled size would not be smaller are left alone; an image no axis shrinks is returned as a copy.
    As nnU-Net's SimulateLowResolutionTransform; one factor on one axis simulates thick slices (anisotropy).
    """
    small = tuple(max(1, round(n / f)) for n, f in zip(image.shape, factors))
    if small == image.shape:
        return image.copy()
    down = ndimage.zoom(image, np.divide(small, image.shape), order=0, mode="nearest", grid_mode=True)
    return ndimage.zoom(down, np.divide(image.shape, small), order=order, mode="nearest", grid_mode=True).astype(
        image.dtype, copy=False
    )


def contrast(image: np.ndarray, factor: float) -> np.ndarray:
    """(image - mean) * factor + mean: the mean is kept, the spread about it scaled."""
    mean = image.mean(dtype=np.float64)
    return ((image - mean) * factor + mean).astype(image.dtype, copy=False)


def gamma(image: np.ndarray, exponent: float) -> np.ndarray:
    """Rescale to [0, 1] by the image's own minimum and maximum, raise to `exponent`, rescale back (nnU-Net).

    The minimum and maximum are kept; below 1 brightens the dark range, above 1 darkens it. A constant image is
    returned as a copy.
    """
    low, high = float(image.min()), float(image.max())
    if high <= low:
        return image.copy()
    unit = (image.astype(np.float64) - low) / (high - low)
    return (np.power(unit, exponent) * (high - low) + low).astype(image.dtype)
