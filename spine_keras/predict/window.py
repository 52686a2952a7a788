"""Sliding-window inference in numpy: window grid, Gaussian importance map, batched runs, CPU stitching.

The model only ever sees windows of its training shape; probabilities are accumulated on the host, so the
volume never has to fit on the device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from spine_keras import grid

SIGMA_SCALE = 0.125  # Gaussian sigma as a fraction of the window side (nnU-Net's and MONAI's default)
MIN_WEIGHT = 1e-3  # floor of the importance map, so voxels seen only by window borders still count

BatchFn = Callable[[np.ndarray], np.ndarray]  # (batch, *window, channels) -> (batch, *window, classes)


def gaussian_importance(window: Sequence[int], sigma_scale: float = SIGMA_SCALE) -> np.ndarray:
    """Separable Gaussian centred on the window, peak 1, floored at MIN_WEIGHT: weights centre voxels above edges."""
    weights = np.ones((), np.float64)
    for side in window:
        coords = np.arange(side, dtype=np.float64) - (side - 1) / 2.0
        profile = np.exp(-0.5 * (coords / max(sigma_scale * side, 1e-6)) ** 2)
        weights = np.multiply.outer(weights, profile)
    weights /= weights.max()
    return np.maximum(weights, MIN_WEIGHT).astype(np.float32)


def window_grid(shape: Sequence[int], window: Sequence[int], overlap: float) -> list[tuple[int, ...]]:
    """Window start corners over a grid of `shape` (every side >= the window side), on the shared `grid`."""
    return grid.corners(shape, window, [grid.step_for_overlap(int(w), overlap) for w in window])


def weight_sum(shape: Sequence[int], window: Sequence[int], overlap: float, weights: np.ndarray) -> np.ndarray:
    """Per-voxel sum of the importance weights of every window covering it (the stitching denominator)."""
    total = np.zeros(tuple(shape), np.float32)
    for start in window_grid(shape, window, overlap):
        total[grid.box(start, window)] += weights
    return total


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def sliding_window(
    samples: np.ndarray,
    window: Sequence[int],
    run: BatchFn,
    n_classes: int,
    overlap: float = 0.5,
    batch_size: int = 4,
    gaussian: bool = True,
) -> np.ndarray:
    """Probabilities (n, *spatial, classes) for samples (n, *spatial, channels) whose sides are >= the window.

    Windows of all samples are batched together; each prediction is weighted by the importance map and the
    sum divided by the per-voxel weight total, so overlapping windows blend without seams.
    """
    window = tuple(int(w) for w in window)
    spatial = samples.shape[1:-1]
    if any(n < w for n, w in zip(spatial, window)):
        raise ValueError(f"samples {spatial} are smaller than the window {window}; pad them first")
    weights = gaussian_importance(window) if gaussian else np.ones(window, np.float32)
    starts = window_grid(spatial, window, overlap)
    total = np.zeros(samples.shape[:-1] + (n_classes,), np.float32)
    tasks = [(i, start) for i in range(samples.shape[0]) for start in starts]
    for batch in _chunks(tasks, max(1, batch_size)):
        inputs = np.stack([samples[(i, *grid.box(start, window))] for i, start in batch])
        probabilities = run(inputs)
        for (i, start), prob in zip(batch, probabilities):
            total[(i, *grid.box(start, window))] += prob * weights[..., None]
    denominator = weight_sum(spatial, window, overlap, weights)
    return total / denominator[None, ..., None]
