"""Fused 2D/3D augmentation (numpy, scipy, SimpleITK only): draw parameters, then apply them deterministically.

All spatial transforms (rotation, zoom, flip, shift) form one affine matrix applied in one resampling pass
(image linear, label nearest); then blur, noise and intensity rescale touch the image only. `augment` is
thread-safe and uses only the generator it is given, so it also serves on-the-fly training augmentation.
"""

from spine_keras.augment.config import AugmentConfig, AugmentParams, sample_params
from spine_keras.augment.geometry import affine_matrix, resample, rotation_matrix
from spine_keras.augment.pipeline import apply, augment, spatial_shape

__all__ = [
    "AugmentConfig",
    "AugmentParams",
    "affine_matrix",
    "apply",
    "augment",
    "resample",
    "rotation_matrix",
    "sample_params",
    "spatial_shape",
]
