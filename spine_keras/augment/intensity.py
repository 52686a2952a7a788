"""The generic intensity transforms (image only): gaussian blur, additive noise reproducible from a seed, rescale."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def gaussian_noise(shape: tuple[int, ...], std: float, seed: int) -> np.ndarray:
    """Float32 N(0, std^2) noise, the same for the same seed (a private generator: no global state, thread-safe)."""
    noise = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    noise *= np.float32(std)
    return noise


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of every spatial axis, sigma in voxels, in the image's dtype."""
    return ndimage.gaussian_filter(image, sigma, output=image.dtype)


def rescale(image: np.ndarray, scale: float, shift: float) -> np.ndarray:
    """image * scale + shift, in place."""
    image *= image.dtype.type(scale)
    image += image.dtype.type(shift)
    return image
