"""Augmentation settings (ranges, JSON-able) and the draw of one AugmentParams from them."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from spine_keras.augment.params import AugmentParams, bias_terms

Pair = tuple[float, float]
PROBABILITIES = (
    *("flip_prob", "noise_prob", "blur_prob", "intensity_prob"),
    *("gamma_prob", "contrast_prob", "bias_prob", "lowres_prob", "elastic_prob"),
)
MAX_BIAS_STRENGTH = 5.0  # exp(5) already scales a corner 150-fold
MAX_BIAS_ORDER = 6


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


def _axes(name: str, value: Any) -> tuple[int, ...] | None:
    """Validate an optional list of whole axis numbers (one number alone is accepted too)."""
    if value is None:
        return None
    axes = value if isinstance(value, (list, tuple)) else (value,)
    if any(float(a) != int(a) for a in axes):
        raise ValueError(f"{name} must be whole axis numbers, got {value!r}")
    return tuple(int(a) for a in axes)


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
    gamma: Pair = (0.7, 1.5)  # exponent on the image rescaled to [0, 1]; below 1 half the time (nnU-Net)
    gamma_prob: float = 0.0
    contrast: Pair = (0.75, 1.25)  # factor about the image's mean
    contrast_prob: float = 0.0
    bias_strength: float = 0.5  # polynomial coefficients of the log bias field drawn in +-strength (TorchIO)
    bias_order: int = 3  # highest total degree of the polynomial
    bias_prob: float = 0.0
    lowres_factor: Pair = (1.0, 2.0)  # downsampling factor, then back to the sample's shape
    lowres_axes: tuple[int, ...] | None = None  # spatial axes downsampled; None = all of them
    lowres_one_axis: bool = False  # True: one axis of lowres_axes drawn per sample (anisotropy)
    lowres_prob: float = 0.0
    elastic_alpha: Pair = (0.0, 2.0)  # displacement standard deviation, voxels; alpha / sigma <= 0.2: no folds
    elastic_sigma: Pair = (10.0, 15.0)  # gaussian smoothing of the displacement noise, voxels
    elastic_prob: float = 0.0

    def __post_init__(self) -> None:
        self.rotation = _number("rotation", self.rotation, 0.0, 180.0)
        self.zoom = _pair("zoom", self.zoom, positive=True)
        self.shift = _number("shift", self.shift, 0.0, 1.0)
        self.noise_std = _pair("noise_std", self.noise_std, low=0.0)
        self.blur_sigma = _pair("blur_sigma", self.blur_sigma, low=0.0)
        self.intensity_scale = _pair("intensity_scale", self.intensity_scale, positive=True)
        self.intensity_shift = _pair("intensity_shift", self.intensity_shift)
        for name in PROBABILITIES:
            setattr(self, name, _number(name, getattr(self, name), 0.0, 1.0))
        self.flip_axes = _axes("flip_axes", self.flip_axes)
        if self.fill_value is not None:
            self.fill_value = _number("fill_value", self.fill_value, -math.inf)
        self._check_mri()

    def _check_mri(self) -> None:
        """Validate the MRI transforms' settings (gamma, contrast, bias field, low resolution, elastic)."""
        self.gamma = _pair("gamma", self.gamma, positive=True)
        self.contrast = _pair("contrast", self.contrast, low=0.0)
        self.bias_strength = _number("bias_strength", self.bias_strength, 0.0, MAX_BIAS_STRENGTH)
        order = _number("bias_order", self.bias_order, 0, MAX_BIAS_ORDER)
        if order != int(order):
            raise ValueError(f"bias_order must be a whole number, got {order:g}")
        self.bias_order = int(order)
        self.lowres_factor = _pair("lowres_factor", self.lowres_factor, low=1.0)
        self.lowres_axes = _axes("lowres_axes", self.lowres_axes)
        if not isinstance(self.lowres_one_axis, bool):
            raise ValueError(f"lowres_one_axis must be true or false, got {self.lowres_one_axis!r}")
        self.elastic_alpha = _pair("elastic_alpha", self.elastic_alpha, low=0.0)
        self.elastic_sigma = _pair("elastic_sigma", self.elastic_sigma, positive=True)

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


def _draw(rng: np.random.Generator, low: float, high: float) -> float:
    """A uniform number as a plain float, with -0.0 folded to 0.0 so zero ranges give exact identities."""
    return float(rng.uniform(low, high)) + 0.0


def sample_params(config: AugmentConfig, spatial_shape: tuple[int, ...], rng: np.random.Generator) -> AugmentParams:
    """Draw one set of parameters; every value is drawn every time, so one setting never shifts the others' draws.

    The MRI transforms (gamma, contrast, bias field, low resolution, elastic) draw from a generator spawned from
    `rng` (numpy's SeedSequence spawning, which leaves `rng`'s own stream untouched), so the older transforms get
    exactly the values they got before those transforms existed, whatever the MRI settings: the same seed gives the
    same cube. `rng` must therefore carry a SeedSequence, as every np.random.default_rng(...) generator does.
    """
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
    mri = _sample_mri(config, ndim, rng.spawn(1)[0])  # a child stream: `rng` advances exactly as it always did
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
        **mri,
    )


def _sample_mri(config: AugmentConfig, ndim: int, rng: np.random.Generator) -> dict[str, Any]:
    """Draw gamma, contrast, bias field, low resolution and elastic deformation, a fixed number of draws each."""
    gamma_on, below, u = rng.random() < config.gamma_prob, rng.random() < 0.5, rng.random()
    contrast_on, contrast = rng.random() < config.contrast_prob, _draw(rng, *config.contrast)
    bias_on, bias_seed = rng.random() < config.bias_prob, int(rng.integers(2**63))
    lowres_on, factor, pick = rng.random() < config.lowres_prob, _draw(rng, *config.lowres_factor), rng.random()
    lowres = _lowres_factors(config, ndim, factor, pick)  # computed every time: a bad axis fails at once
    elastic_on, alpha = rng.random() < config.elastic_prob, _draw(rng, *config.elastic_alpha)
    sigma, elastic_seed = _draw(rng, *config.elastic_sigma), int(rng.integers(2**63))
    out: dict[str, Any] = {}
    if gamma_on:
        out["gamma"] = _gamma(config.gamma, below, u)
    if contrast_on:
        out["contrast"] = contrast
    if bias_on:
        terms = len(bias_terms(config.bias_order, ndim))
        strength = config.bias_strength
        coefficients = np.random.default_rng(bias_seed).uniform(-strength, strength, terms) + 0.0
        out.update(bias_order=config.bias_order, bias_coefficients=tuple(coefficients.tolist()))
    if lowres_on:
        out["lowres"] = lowres
    if elastic_on:
        out.update(elastic_alpha=alpha, elastic_sigma=sigma, elastic_seed=elastic_seed)
    return out


def _gamma(bounds: Pair, below: bool, u: float) -> float:
    """nnU-Net's gamma draw: when the range spans 1, uniform below 1 half the time and above 1 otherwise."""
    lo, hi = bounds
    if lo < 1.0 < hi:
        return lo + u * (1.0 - lo) if below else 1.0 + u * (hi - 1.0)
    return lo + u * (hi - lo)


def _lowres_factors(config: AugmentConfig, ndim: int, factor: float, pick: float) -> tuple[float, ...]:
    """Per-axis downsampling factors: `factor` on lowres_axes (or on one of them, chosen by `pick` in [0, 1))."""
    axes = config.lowres_axes if config.lowres_axes is not None else tuple(range(ndim))
    if any(not -ndim <= a < ndim for a in axes) or not axes:
        raise ValueError(f"lowres_axes {axes} out of range for {ndim}D samples")
    chosen = {axes[int(pick * len(axes))] % ndim} if config.lowres_one_axis else {a % ndim for a in axes}
    return tuple(factor if a in chosen else 1.0 for a in range(ndim))
