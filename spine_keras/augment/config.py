"""Augmentation settings (ranges, JSON-able), the parameters one draw of them yields, and the draw itself."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

Pair = tuple[float, float]


def _pair(name: str, value: Any, low: float = -math.inf, positive: bool = False) -> Pair:
    """Validate a 'low,high' range so a bad flag fails with the field's name, not deep inside a draw."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be two numbers low,high, got {value!r}") from exc
    if not (low <= lo <= hi) or (positive and lo <= 0) or not math.isfinite(hi):
        bound = "0 < low" if positive else f"{low:g} <= low" if math.isfinite(low) else "low"
        raise ValueError(f"{name} must satisfy {bound} <= high, got {lo:g},{hi:g}")
    return lo, hi


def _number(name: str, value: Any, low: float, high: float = math.inf) -> float:
    """Validate one number in [low, high]; a one-element sequence (as flag parsers give) is accepted."""
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a number, got {value!r}") from exc
    if not low <= number <= high:
        raise ValueError(f"{name} must be in [{low:g}, {high:g}], got {number:g}")
    return number


@dataclass
class AugmentConfig:
    """Ranges of the random transforms; every field is a flag of make_cube and is saved in each cube."""

    rotation: float = 20.0  # degrees, +-; in 3D drawn independently about each of the three axes
    zoom: Pair = (0.5, 1.5)  # isotropic factor, > 1 enlarges the anatomy
    flip_prob: float = 0.5  # per axis of flip_axes
    flip_axes: tuple[int, ...] | None = None  # spatial axes that may flip; None = the last one (width)
    shift: float = 0.1  # fraction of each side, +-, per spatial axis
    noise_std: Pair = (0.0, 0.1)  # additive gaussian sigma, in units of the (z-scored) image
    noise_prob: float = 0.5
    blur_sigma: Pair = (0.5, 1.0)  # gaussian blur sigma, voxels
    blur_prob: float = 0.25
    intensity_scale: Pair = (0.9, 1.1)  # multiplicative factor ...
    intensity_shift: Pair = (-0.1, 0.1)  # ... then additive offset, drawn together
    intensity_prob: float = 0.5
    fill_value: float | None = None  # image value outside the field of view; None = the image's minimum

    def __post_init__(self) -> None:
        self.rotation = _number("rotation", self.rotation, 0.0, 180.0)
        self.zoom = _pair("zoom", self.zoom, positive=True)
        self.shift = _number("shift", self.shift, 0.0, 1.0)
        self.noise_std = _pair("noise_std", self.noise_std, low=0.0)
        self.blur_sigma = _pair("blur_sigma", self.blur_sigma, low=0.0)
        self.intensity_scale = _pair("intensity_scale", self.intensity_scale, positive=True)
        self.intensity_shift = _pair("intensity_shift", self.intensity_shift)
        for name in ("flip_prob", "noise_prob", "blur_prob", "intensity_prob"):
            setattr(self, name, _number(name, getattr(self, name), 0.0, 1.0))
        if self.flip_axes is not None:
            axes = self.flip_axes if isinstance(self.flip_axes, (list, tuple)) else (self.flip_axes,)
            if any(float(a) != int(a) for a in axes):
                raise ValueError(f"flip_axes must be whole axis numbers, got {self.flip_axes!r}")
            self.flip_axes = tuple(int(a) for a in axes)
        if self.fill_value is not None:
            self.fill_value = _number("fill_value", self.fill_value, -math.inf)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (lists for ranges), for the cube's `augment` attribute."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugmentConfig:
        """Inverse of to_dict; unknown keys are an error so a typo is not silently ignored."""
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown augmentation settings: {', '.join(sorted(unknown))}")
        return cls(**data)


@dataclass
class AugmentParams:
    """One draw of every transform: what `apply` needs to reproduce an augmented sample exactly."""

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

    def __post_init__(self) -> None:
        self.rotation, self.zoom, self.shift = (tuple(map(float, t)) for t in (self.rotation, self.zoom, self.shift))
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
        """Inverse of to_dict."""
        return cls(**data)


def _draw(rng: np.random.Generator, low: float, high: float) -> float:
    """A uniform number as a plain float, with -0.0 folded to 0.0 so zero ranges give exact identities."""
    return float(rng.uniform(low, high)) + 0.0


def sample_params(config: AugmentConfig, spatial_shape: tuple[int, ...], rng: np.random.Generator) -> AugmentParams:
    """Draw one set of parameters; every value is drawn every time, so one setting never shifts the others' draws."""
    ndim = len(spatial_shape)
    if ndim not in (2, 3):
        raise ValueError(f"augmentation works on 2D or 3D samples, got spatial shape {tuple(spatial_shape)}")
    axes = config.flip_axes if config.flip_axes is not None else (ndim - 1,)
    if any(not -ndim <= a < ndim for a in axes):
        raise ValueError(f"flip_axes {axes} out of range for {ndim}D samples")
    rotation = tuple(_draw(rng, -config.rotation, config.rotation) for _ in range(1 if ndim == 2 else 3))
    zoom = _draw(rng, *config.zoom)
    flips = rng.random(len(axes)) < config.flip_prob
    shift = tuple(_draw(rng, -config.shift, config.shift) for _ in range(ndim))
    noise, noise_std = rng.random() < config.noise_prob, _draw(rng, *config.noise_std)
    noise_seed = int(rng.integers(2**63))
    blur, blur_sigma = rng.random() < config.blur_prob, _draw(rng, *config.blur_sigma)
    intensity = rng.random() < config.intensity_prob
    scale, offset = _draw(rng, *config.intensity_scale), _draw(rng, *config.intensity_shift)
    return AugmentParams(
        rotation=rotation,
        zoom=(zoom,) * ndim,
        flip=tuple(sorted({a % ndim for a, f in zip(axes, flips) if f})),
        shift=shift,
        fill_value=config.fill_value,
        noise_std=noise_std if noise else 0.0,
        noise_seed=noise_seed if noise else 0,
        blur_sigma=blur_sigma if blur else 0.0,
        intensity_scale=scale if intensity else 1.0,
        intensity_shift=offset if intensity else 0.0,
    )
