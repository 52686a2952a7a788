"""Post-processing of a predicted label map: remove islands, per foreground class.

`largest` keeps each foreground class's largest connected component (right for one structure per class, such as
L1..L5 as five classes; wrong for one 'vertebra' class holding five separate bodies). `min-size:ML` removes every
component of a class smaller than ML millilitres (voxel volume from the spacing), whatever the number of
structures. Removed voxels become background. Components are 26-connected (3D; 8 in 2D): voxels touching by a
face, an edge or a corner belong together. Applied to the final label map in the input's geometry.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from spine_keras.errors import UserError

KINDS = ("none", "largest", "min-size")
MM3_PER_ML = 1000.0


@dataclasses.dataclass(frozen=True)
class Postprocess:
    """What to do with the label map: `kind` one of KINDS; `min_ml` the smallest component kept by min-size."""

    kind: str = "none"
    min_ml: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UserError(f"--postprocess must be none, largest or min-size:ML, not '{self.kind}'")
        if not (math.isfinite(self.min_ml) and self.min_ml >= 0):
            raise UserError(f"--postprocess min-size takes a volume >= 0 in millilitres, not {self.min_ml:g}")

    @classmethod
    def parse(cls, spec: Postprocess | str) -> Postprocess:
        """From 'none', 'largest' or 'min-size:ML' (ML in millilitres, e.g. 'min-size:0.5'); UserError otherwise."""
        if isinstance(spec, Postprocess):
            return spec
        kind, _, size = spec.strip().lower().partition(":")
        if kind != "min-size":
            if size:
                raise UserError(f"--postprocess '{spec}': only min-size takes a value (e.g. min-size:0.5)")
            return cls(kind)
        try:
            return cls(kind, float(size))
        except ValueError as exc:
            raise UserError(
                f"--postprocess '{spec}': write min-size:ML with ML in millilitres, e.g. min-size:0.5"
            ) from exc

    def __str__(self) -> str:
        return f"min-size:{self.min_ml:g}" if self.kind == "min-size" else self.kind


def components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The connected components of a bool `mask` (full connectivity): (component id per voxel, 0 outside; voxel
    count per id, index 0 unused)."""
    from scipy import ndimage

    found, _ = ndimage.label(mask, ndimage.generate_binary_structure(mask.ndim, mask.ndim))
    sizes = np.bincount(found.ravel())
    sizes[0] = 0
    return found, sizes


def keep_largest(labels: np.ndarray) -> np.ndarray:
    """A copy of `labels` where each foreground class keeps only its largest component (ties: the first found)."""
    out = labels.copy()
    for value in _foreground(labels):
        found, sizes = components(labels == value)
        out[(found != int(np.argmax(sizes))) & (found > 0)] = 0
    return out


def remove_small(labels: np.ndarray, spacing: Sequence[float], min_ml: float) -> np.ndarray:
    """A copy of `labels` without the components (of any foreground class) smaller than `min_ml` millilitres."""
    voxel_mm3 = float(np.prod(np.asarray(spacing, dtype=float)))
    out = labels.copy()
    for value in _foreground(labels):
        found, sizes = components(labels == value)
        small = sizes * voxel_mm3 < min_ml * MM3_PER_ML  # compared in mm3
        small[0] = False
        out[small[found]] = 0
    return out


def postprocess_labels(labels: np.ndarray, spacing: Sequence[float], spec: Postprocess | str) -> np.ndarray:
    """`labels` post-processed as `spec` says ('none', 'largest', 'min-size:ML' or a `Postprocess`); 'none'
    returns `labels` itself."""
    chosen = Postprocess.parse(spec)
    if chosen.kind == "largest":
        return keep_largest(labels)
    if chosen.kind == "min-size":
        return remove_small(labels, spacing, chosen.min_ml)
    return labels


def _foreground(labels: np.ndarray) -> list[int]:
    """The foreground class ids (non-negative integers, 0 = background) present in `labels`."""
    return [int(v) for v in np.flatnonzero(np.bincount(labels.ravel())) if v != 0]
