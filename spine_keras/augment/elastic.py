"""Elastic deformation: a smooth random displacement field from a seed, composed with the affine into one pass.

The field (one component per spatial axis, in voxels) is gaussian-filtered white noise rescaled so each
component's standard deviation is `alpha`. It is defined on the output grid: output voxel p shows the affine's
input at inverse(p + d(p)), so image (linear) and label (nearest) are each resampled once, not once per transform.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

COARSE_STEP = 4.0  # the noise grid's step is sigma / COARSE_STEP voxels: sigma spans this many coarse voxels


def displacement(shape: tuple[int, ...], alpha: float, sigma: float, seed: int) -> np.ndarray:
    """(ndim, *shape) float32 displacement in voxels; each component has standard deviation `alpha`.

    Filtering white noise at full size costs seconds in 3D; the noise is drawn on a grid `sigma / COARSE_STEP`
    times coarser (sigma still spans COARSE_STEP coarse voxels, so the field is smooth there), filtered, and
    interpolated linearly to `shape`, one axis at a time. The same seed, shape, alpha and sigma give the same field.
    """
    step = max(1.0, sigma / COARSE_STEP)
    coarse = tuple(max(2, int(np.ceil(n / step)) + 1) for n in shape)
    noise = np.random.default_rng(seed).standard_normal((len(shape), *coarse), dtype=np.float32)
    field = np.empty((len(shape), *shape), np.float32)
    for component, out in zip(noise, field):
        smooth = ndimage.gaussian_filter(component, sigma / step, mode="reflect")
        for axis, target in enumerate(shape):
            smooth = _upsample(smooth, axis, target)
        std = float(smooth.std())
        out[...] = smooth * np.float32(alpha / std) if std > 0 else 0.0
    return field


def _upsample(array: np.ndarray, axis: int, target: int) -> np.ndarray:
    """Linear interpolation of `array` along `axis` onto `target` samples spanning the same extent."""
    size = array.shape[axis]
    x = np.clip((np.arange(target) + 0.5) * size / target - 0.5, 0, size - 1)
    low = np.minimum(np.floor(x).astype(np.intp), size - 2)
    weight = (x - low).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(array.ndim)])
    return np.take(array, low, axis) * (1 - weight) + np.take(array, low + 1, axis) * weight


def sample_points(inverse: np.ndarray, field: np.ndarray) -> np.ndarray:
    """(ndim, *shape) input coordinates for every output voxel: inverse @ (index + displacement), homogeneous."""
    ndim = field.shape[0]
    points = np.indices(field.shape[1:], dtype=np.float32) + field
    mapped = np.tensordot(inverse[:ndim, :ndim].astype(np.float32), points, axes=1)
    mapped += inverse[:ndim, ndim].astype(np.float32).reshape((ndim,) + (1,) * ndim)
    return mapped


def warp(array: np.ndarray, points: np.ndarray, order: int, fill: float) -> np.ndarray:
    """`array` sampled at `points` (order 1 linear, 0 nearest), in its dtype; outside the volume gets `fill`.

    Inside means within half a voxel of the outermost voxel centres, as SimpleITK's resampler (geometry.resample)
    decides, so the elastic and the affine-only paths agree on where the field of view ends. Nearest neighbour is
    plain indexing (labels keep exactly their ids); linear is scipy's map_coordinates.
    """
    outside = np.zeros(array.shape, bool)
    for axis, n in enumerate(array.shape):
        outside |= (points[axis] < -0.5) | (points[axis] >= n - 0.5)
    if order == 0:
        index = tuple(np.clip(np.floor(p + 0.5).astype(np.intp), 0, n - 1) for p, n in zip(points, array.shape))
        out = array[index]
    else:
        out = ndimage.map_coordinates(array, points, output=array.dtype, order=order, mode="nearest")
    out[outside] = fill
    return out
