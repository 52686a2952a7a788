"""AugmentParams: one draw of every transform, all `apply` needs to reproduce an augmented sample exactly."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any


def bias_terms(order: int, ndim: int) -> list[tuple[int, ...]]:
    """Exponents of the polynomial bias-field terms of total degree <= order, constant first (TorchIO's order)."""
    if ndim == 1:
        return [(i,) for i in range(order + 1)]
    return [(i, *rest) for i in range(order + 1) for rest in bias_terms(order - i, ndim - 1)]


@dataclass
class AugmentParams:
    """One draw of every transform; every field after `shift` defaults to its transform's identity."""

    rotation: tuple[float, ...]  # degrees; 2D: one angle (plane 0-1); 3D: about axes 0, 1, 2 (R0 @ R1 @ R2)
    zoom: tuple[float, ...]  # per spatial axis, > 1 enlarges
    flip: tuple[int, ...]  # spatial axes flipped
    shift: tuple[float, ...]  # per spatial axis, fraction of that side
    fill_value: float | None = None  # None = the image's minimum
    noise_std: float = 0.0  # 0 = no noise
    noise_seed: int = 0
    blur_sigma: float = 0.0  # 0 = no blur
    intensity_scale: float = 1.0
    intensity_shift: float = 0.0
    gamma: float = 1.0  # exponent on the image rescaled to [0, 1]
    contrast: float = 1.0  # (x - mean) * contrast + mean
    bias_order: int = 0
    bias_coefficients: tuple[float, ...] = ()  # one per term of bias_terms(bias_order, ndim); () = no bias field
    lowres: tuple[float, ...] = ()  # downsampling factor per spatial axis (>= 1); () = none
    elastic_alpha: float = 0.0  # displacement standard deviation, voxels; 0 = no elastic deformation
    elastic_sigma: float = 0.0  # smoothness of the displacement field, voxels
    elastic_seed: int = 0

    def __post_init__(self) -> None:
        self.rotation, self.zoom, self.shift = (tuple(map(float, t)) for t in (self.rotation, self.zoom, self.shift))
        self.bias_coefficients, self.lowres = tuple(map(float, self.bias_coefficients)), tuple(map(float, self.lowres))
        self.flip = tuple(int(a) for a in self.flip)
        ndim = self.ndim
        if (
            ndim not in (2, 3)
            or len(self.shift) != ndim
            or len(self.rotation) != (1 if ndim == 2 else 3)
            or any(not 0 <= a < ndim for a in self.flip)
        ):
            raise ValueError(
                f"inconsistent augmentation parameters: rotation {self.rotation}, zoom {self.zoom}, "
                f"shift {self.shift}, flip {self.flip} (2D: 1 angle, 2 axes; 3D: 3 angles, 3 axes)"
            )
        self._check_mri(ndim)

    def _check_mri(self, ndim: int) -> None:
        """ValueError naming the field when an MRI transform's parameters cannot be applied to `ndim` axes."""
        terms = len(bias_terms(self.bias_order, ndim))
        checks = {
            "gamma": self.gamma > 0,
            "contrast": self.contrast >= 0,
            "bias_coefficients": not self.bias_coefficients or len(self.bias_coefficients) == terms,
            "lowres": not self.lowres or (len(self.lowres) == ndim and all(f >= 1 for f in self.lowres)),
            "elastic_alpha": self.elastic_alpha >= 0,
            "elastic_sigma": self.elastic_sigma > 0 or self.elastic_alpha == 0,
        }
        for name, good in checks.items():
            value = getattr(self, name)
            if not good or not all(map(math.isfinite, value if isinstance(value, tuple) else (value,))):
                raise ValueError(f"augmentation parameter {name} = {value} does not fit {ndim}D samples")

    @property
    def ndim(self) -> int:
        """Spatial rank these parameters are for (2 or 3)."""
        return len(self.zoom)

    @property
    def spatial_identity(self) -> bool:
        """True when the geometry is at most a flip, so no resampling is needed."""
        return not any(self.rotation) and not any(self.shift) and all(z == 1.0 for z in self.zoom)

    @classmethod
    def identity(cls, ndim: int) -> AugmentParams:
        """Parameters that change nothing (2D or 3D)."""
        return cls(rotation=(0.0,) * (1 if ndim == 2 else 3), zoom=(1.0,) * ndim, flip=(), shift=(0.0,) * ndim)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, to log or store how a sample was made."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugmentParams:
        """Inverse of to_dict; parameters logged before a transform existed get its identity."""
        return cls(**data)
