"""Validated build options of one model: preset defaults, user overrides, input geometry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any

from spine_keras.choices import ACTIVATIONS, NORMALIZATIONS, UPSAMPLINGS
from spine_keras.errors import UserError
from spine_keras.models.registry import ARCHS, PRESETS, VGG16_CONVS, ArchSpec, arch_code

FINAL_ACTIVATIONS = ("softmax", "none")
OVERRIDES = (
    "filters",
    "depth",
    "activation",
    "normalization",
    "dropout",
    "upsampling",
    "final_activation",
    "deep_supervision",
)
_AXES = {2: ("H", "W"), 3: ("D", "H", "W")}
VGG_MAX_SCALE = 8  # VGG16 widths 64..512 are 1x..8x its initial 64 filters
FC_SCALE = 16  # fcn's fc6/fc7 width in initial filters (VGG16's 4096 would be 64x; 16x keeps 3D models tractable)


@dataclass(frozen=True)
class BuildConfig:
    """Everything a block needs to know to build its layers."""

    arch: str
    spec: ArchSpec
    input_shape: tuple[int, ...]
    n_classes: int
    filters: int
    depth: int
    activation: str
    normalization: str
    dropout: float
    upsampling: str
    final_activation: str | None
    deep_supervision: bool

    @property
    def rank(self) -> int:
        """Number of spatial axes: 2 or 3."""
        return len(self.input_shape) - 1


def level_filters(cfg: BuildConfig, level: int) -> int:
    """Filters at `level` (0 = full resolution): doubling per level, capped at 8x for the VGG16 encoder."""
    scale = 2**level
    return cfg.filters * (min(scale, VGG_MAX_SCALE) if cfg.spec.vgg else scale)


def _choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """`value` lower-cased if it is one of `choices` (None counts as 'none'), else a UserError."""
    text = "none" if value is None else str(value).strip().lower()
    if text not in choices:
        raise UserError(f"{name}={value!r} is not valid; choose one of: {', '.join(choices)}")
    return text


def _int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """`value` as an int within [low, high], else a UserError."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in {low}..{high}"
        raise UserError(f"{name} must be an integer {bound}, got {value!r}")
    return int(value)


def _input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    """The input shape as ints, (H, W, C) or (D, H, W, C), else a UserError."""
    shape = tuple(input_shape)
    if len(shape) not in (3, 4):
        raise UserError(
            f"input_shape {shape} needs (H, W, C) for 2D or (D, H, W, C) for 3D "
            f"(spatial sides then channels), got {len(shape)} dims"
        )
    return tuple(_int("every input_shape entry", value, 1) for value in shape)


def _check_divisible(shape: tuple[int, ...], depth: int, why: str) -> None:
    """UserError naming the first spatial side that 2^depth does not divide, and its nearest valid size."""
    div = 2**depth
    for axis, side in zip(_AXES[len(shape) - 1], shape[:-1]):
        if side % div:
            lower, upper = side // div * div, side // div * div + div
            nearest = upper if lower == 0 or upper - side < side - lower else lower
            raise UserError(
                f"input side {axis}={side} is not divisible by 2^{depth}={div} ({why}); nearest valid size: {nearest}"
            )


def make_config(arch: str, input_shape: Sequence[int], n_classes: int, overrides: dict[str, Any]) -> BuildConfig:
    """Check `overrides` against the arch and input, fill the rest from the preset and the defaults."""
    code = arch_code(arch)
    spec = ARCHS[code]
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise UserError(f"unknown override(s) {', '.join(unknown)}; valid: {', '.join(OVERRIDES)}")
    shape = _input_shape(input_shape)
    n_classes = _int("n_classes", n_classes, 2)
    opts = {**_defaults(code, spec), **overrides}
    depth = _depth(spec, opts)
    dropout = opts["dropout"]
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise UserError(f"dropout must be a rate in [0, 1), got {dropout!r}")
    why = f"the VGG16 encoder of {code} pools {depth} times" if spec.vgg else f"depth={depth} of {code}"
    _check_divisible(shape, depth, why)
    final = _choice("final_activation", opts["final_activation"], FINAL_ACTIVATIONS)
    return BuildConfig(
        arch=code,
        spec=spec,
        input_shape=shape,
        n_classes=n_classes,
        filters=_int("filters", opts["filters"], 4 if spec.multi_kernel else 1),
        depth=depth,
        activation=_choice("activation", opts["activation"], ACTIVATIONS),
        normalization=_choice("normalization", opts["normalization"], NORMALIZATIONS),
        dropout=float(dropout),
        upsampling=_choice("upsampling", opts["upsampling"], UPSAMPLINGS),
        final_activation=None if final == "none" else final,
        deep_supervision=opts["deep_supervision"],
    )


def _defaults(code: str, spec: ArchSpec) -> dict[str, Any]:
    """The build options of `code` before overrides: its preset's filters and activation, then the house defaults."""
    return {
        "filters": PRESETS[code]["filters"],
        "activation": PRESETS[code]["activation"],
        "depth": len(VGG16_CONVS) if spec.vgg else 4,
        "normalization": "batch",
        "dropout": 0.0,
        "upsampling": "transpose",
        "final_activation": "softmax",
        "deep_supervision": spec.deep_supervision,
    }


def _depth(spec: ArchSpec, opts: dict[str, Any]) -> int:
    """The checked depth; also the options a depth or arch rules out (fcn's fixed depth, its lack of a decoder)."""
    depth = _int("depth", opts["depth"], 1, len(VGG16_CONVS) if spec.vgg else None)
    if spec.fcn and depth != len(VGG16_CONVS):
        raise UserError(f"fcn has the fixed depth 5 of VGG16 (pool3/pool4/pool5 fusion), got depth={depth}")
    if spec.fcn and opts["deep_supervision"]:
        raise UserError("fcn has no decoder levels for deep supervision; use a U-Net code such as ud")
    if not isinstance(opts["deep_supervision"], bool):
        raise UserError(f"deep_supervision must be True or False, got {opts['deep_supervision']!r}")
    return depth
