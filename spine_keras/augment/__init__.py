"""Fused 2D/3D augmentation (numpy, scipy, SimpleITK only): draw parameters, then apply them deterministically.

All spatial transforms (rotation, zoom, flip, shift) form one affine matrix applied in one resampling pass
(image linear, label nearest), composed with an optional elastic deformation; then the image-only transforms:
bias field, simulated low resolution, blur, noise, intensity rescale, contrast and gamma. `augment` is
thread-safe and uses only the generator it is given, so it also serves on-the-fly training augmentation.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spine_keras.augment.config import AugmentConfig, sample_params
    from spine_keras.augment.geometry import affine_matrix, resample, rotation_matrix
    from spine_keras.augment.params import AugmentParams
    from spine_keras.augment.pipeline import apply, apply_channels, augment, augment_channels, spatial_shape

_HOMES = {  # loaded on first use: `spine-make-cube --help` reads AugmentConfig without loading scipy and SimpleITK
    **dict.fromkeys(("AugmentConfig", "sample_params"), "spine_keras.augment.config"),
    "AugmentParams": "spine_keras.augment.params",
    **dict.fromkeys(("affine_matrix", "resample", "rotation_matrix"), "spine_keras.augment.geometry"),
    **dict.fromkeys(
        ("apply", "apply_channels", "augment", "augment_channels", "spatial_shape"), "spine_keras.augment.pipeline"
    ),
}

__all__ = [
    "AugmentConfig",
    "AugmentParams",
    "affine_matrix",
    "apply",
    "apply_channels",
    "augment",
    "augment_channels",
    "resample",
    "rotation_matrix",
    "sample_params",
    "spatial_shape",
]


def __getattr__(name: str) -> Any:
    """Import `name` from its module the first time it is asked for (PEP 562)."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
