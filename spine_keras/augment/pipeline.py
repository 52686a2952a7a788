"""apply (deterministic, from parameters) and augment (draw, then apply) on one 2D or 3D sample."""

from __future__ import annotations

import numpy as np

from spine_keras.augment import elastic, intensity, mri
from spine_keras.augment.config import AugmentConfig, sample_params
from spine_keras.augment.geometry import affine_matrix, resample
from spine_keras.augment.params import AugmentParams


def _spatial(array: np.ndarray, ndim: int, name: str) -> np.ndarray:
    """Drop a trailing channel axis of size 1, so only the spatial axes are transformed."""
    if array.ndim == ndim + 1 and array.shape[-1] == 1:
        return array[..., 0]
    if array.ndim != ndim:
        raise ValueError(f"{name} of shape {array.shape} is not a {ndim}D sample (optionally with one channel)")
    return array


def spatial_shape(image: np.ndarray, label: np.ndarray | None = None) -> tuple[int, ...]:
    """The sample's spatial shape: the label's, else the image's less a trailing channel axis of size 1."""
    if label is not None:
        return tuple(label.shape[:-1] if label.ndim == 4 or (label.ndim == 3 and label.shape[-1] == 1) else label.shape)
    return tuple(image.shape[:-1] if image.ndim == 4 or (image.ndim == 3 and image.shape[-1] == 1) else image.shape)


def apply(image: np.ndarray, label: np.ndarray | None, params: AugmentParams) -> tuple[np.ndarray, np.ndarray | None]:
    """Augment one sample with given parameters: one geometric pass (image linear, label nearest), then intensity.

    Shapes and dtypes are kept (a trailing channel axis of size 1 too); the inputs are never modified. Outside
    the field of view the image gets params.fill_value (None: its minimum) and the label 0 (background).
    """
    if not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"image must be floating point, got {image.dtype}")
    if label is not None and not np.issubdtype(label.dtype, np.integer):
        raise TypeError(f"label must be integer, got {label.dtype}")
    img = _spatial(image, params.ndim, "image")
    lab = None if label is None else _spatial(label, params.ndim, "label")
    if lab is not None and lab.shape != img.shape:
        raise ValueError(f"label shape {label.shape} does not match image shape {image.shape}")
    out, out_label = _geometry(img, lab, params)
    out = _intensity(out, params)
    return out.reshape(image.shape), None if out_label is None else out_label.reshape(label.shape)


def _geometry(img: np.ndarray, lab: np.ndarray | None, params: AugmentParams) -> tuple[np.ndarray, np.ndarray | None]:
    """Flip, rotation, zoom, shift and elastic deformation in one resampling pass (none for a flip alone)."""
    if params.spatial_identity and params.elastic_alpha == 0:
        return np.flip(img, params.flip).copy(), None if lab is None else np.flip(lab, params.flip).copy()
    inverse = np.linalg.inv(affine_matrix(params, img.shape))
    fill = float(img.min()) if params.fill_value is None else params.fill_value
    if params.elastic_alpha == 0:
        return resample(img, inverse, 1, fill), None if lab is None else resample(lab, inverse, 0, 0)
    field = elastic.displacement(img.shape, params.elastic_alpha, params.elastic_sigma, params.elastic_seed)
    points = elastic.sample_points(inverse, field)
    return elastic.warp(img, points, 1, fill), None if lab is None else elastic.warp(lab, points, 0, 0)


def _intensity(out: np.ndarray, params: AugmentParams) -> np.ndarray:
    """Image-only transforms in acquisition order: bias field, low resolution, blur, noise, rescale, contrast, gamma.

    `out` is a fresh array (from _geometry) and may be modified in place.
    """
    if any(params.bias_coefficients):
        out = mri.apply_bias_field(out, mri.bias_field(out.shape, params.bias_order, params.bias_coefficients))
    if any(f > 1 for f in params.lowres):
        out = mri.low_resolution(out, params.lowres)
    if params.blur_sigma > 0:
        out = intensity.blur(out, params.blur_sigma)
    if params.noise_std > 0:
        out += intensity.gaussian_noise(out.shape, params.noise_std, params.noise_seed).astype(out.dtype, copy=False)
    if params.intensity_scale != 1.0 or params.intensity_shift != 0.0:
        intensity.rescale(out, params.intensity_scale, params.intensity_shift)
    if params.contrast != 1.0:
        out = mri.contrast(out, params.contrast)
    if params.gamma != 1.0:
        out = mri.gamma(out, params.gamma)
    return out


def augment(
    image: np.ndarray, label: np.ndarray | None, config: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None]:
    """Draw parameters from `config` with `rng` and apply them (the on-the-fly entry point)."""
    return apply(image, label, sample_params(config, spatial_shape(image, label), rng))


def apply_channels(image: np.ndarray, label: np.ndarray, params: AugmentParams) -> tuple[np.ndarray, np.ndarray]:
    """`augment.apply` for an image (*shape, channels): every channel (2.5D neighbours) gets the same transform,
    the label is transformed once."""
    if image.shape[-1] == 1:
        return apply(image, label, params)
    out, out_label = apply(image[..., 0], label, params)
    rest = [apply(image[..., c], None, params)[0] for c in range(1, image.shape[-1])]
    return np.stack([out, *rest], axis=-1), out_label


def augment_channels(
    image: np.ndarray, label: np.ndarray, config: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """`augment.augment` (draw, then apply) for an image (*shape, channels) and its label (*shape)."""
    if image.shape[-1] == 1:
        return augment(image, label, config, rng)
    return apply_channels(image, label, sample_params(config, label.shape, rng))
