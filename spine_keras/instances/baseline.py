"""The baseline the iterative network is measured against: a semantic vertebra mask split into connected
components, ordered along the spine and named with levels.

Its two known failures are what the iterative method is for: vertebrae that touch in the mask merge into one
component, and a vertebra the semantic model missed shifts the level of every one on the far side of the anchor.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from spine_keras.levels import LEVEL_IDS, id_centres, name_found

DEFAULT_MIN_ML = 1.0  # components smaller than this (ml) are noise, not vertebrae
DEFAULT_MIN_FRACTION = 0.0  # components smaller than this share of the median component are dropped (0 = keep)


def components(
    mask: np.ndarray,
    spacing: Sequence[float],
    min_ml: float = DEFAULT_MIN_ML,
    min_fraction: float = DEFAULT_MIN_FRACTION,
) -> np.ndarray:
    """Face-connected components of a boolean mask (int32 ids 1..n, top to bottom along axis 0), those under
    `min_ml` millilitres dropped, then those under `min_fraction` of the median remaining component's volume.

    The second rule keeps the components consistent with a spine: neighbouring vertebral bodies differ in volume by
    far less than a factor of four, so a component that small is a fragment (a partly segmented sacrum or a vertebra
    cut by the field of view), and naming it would shift every level counted past it."""
    parts, count = ndimage.label(np.asarray(mask, dtype=bool))
    if not count:
        return parts
    sizes = np.bincount(parts.reshape(-1), minlength=count + 1) * float(np.prod(spacing)) / 1000.0
    keep = np.flatnonzero(sizes >= min_ml)
    keep = keep[keep != 0]
    if min_fraction > 0 and keep.size:
        keep = keep[sizes[keep] >= min_fraction * float(np.median(sizes[keep]))]
    kept = np.where(np.isin(parts, keep), parts, 0)
    centres = id_centres(kept)
    table = np.zeros(count + 1, np.int32)
    for rank, part in enumerate(sorted(centres, key=lambda i: (centres[i], i)), start=1):
        table[part] = rank
    return table[kept]


def to_levels(ranked: np.ndarray, levels: list[str], anchor: str = "bottom") -> np.ndarray:
    """An instance map with ids 1..n top to bottom renamed to level ids (uint8) by `name_found`; instances whose
    level would lie beyond C1 or S1 become 0."""
    count = int(ranked.max(initial=0))
    table = np.zeros(count + 1, np.uint8)
    for rank, name in enumerate(name_found(count, levels, anchor), start=1):
        table[rank] = LEVEL_IDS[name] if name else 0
    return table[ranked]


def baseline_levels(
    mask: np.ndarray,
    spacing: Sequence[float],
    levels: list[str],
    anchor: str = "bottom",
    min_ml: float = DEFAULT_MIN_ML,
    min_fraction: float = DEFAULT_MIN_FRACTION,
) -> np.ndarray:
    """Semantic vertebra mask -> connected components -> order along axis 0 -> level-id instance map (uint8)."""
    return to_levels(components(mask, spacing, min_ml, min_fraction), levels, anchor)
