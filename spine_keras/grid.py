"""The one window grid: where windows of a fixed size start along each axis of an array.

The cube builder tiles 3D training patches on it (step = `--stride`) and sliding-window inference covers a volume
with it (step = window x (1 - overlap)), so training and inference cannot disagree on where windows fall.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence


def starts(size: int, window: int, step: int) -> list[int]:
    """Window starts covering `size` voxels every `step` voxels, the last one flush with the end.

    An axis no longer than the window gets one window at 0 (the caller pads it).
    """
    if step < 1:
        raise ValueError(f"grid step must be >= 1, got {step}")
    if size <= window:
        return [0]
    found = list(range(0, size - window + 1, step))
    if found[-1] != size - window:
        found.append(size - window)
    return found


def step_for_overlap(window: int, overlap: float) -> int:
    """The step between windows that overlap by the fraction `overlap` of their side (at least 1 voxel)."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must lie in [0, 1), got {overlap}")
    return max(1, round(window * (1.0 - overlap)))


def corners(shape: Sequence[int], window: Sequence[int], step: Sequence[int]) -> list[tuple[int, ...]]:
    """Every window's start corner over an array of `shape`, in C order (last axis fastest)."""
    axes = (starts(int(n), int(w), int(s)) for n, w, s in zip(shape, window, step))
    return list(itertools.product(*axes))


def box(corner: Sequence[int], window: Sequence[int]) -> tuple[slice, ...]:
    """The slices that cut the window starting at `corner`."""
    return tuple(slice(int(c), int(c) + int(w)) for c, w in zip(corner, window))
