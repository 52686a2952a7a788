"""Per-class overlap and surface distances of a label map against ground truth, in millimetres.

numpy and scipy only, so that prediction (and the study above it) can score volumes without Keras. The surface of
a mask is its boundary voxels, `mask & ~binary_erosion(mask)` with full connectivity (a mask touching the array's
edge has its edge voxels on its surface); surface distances come from a Euclidean distance transform with
`sampling=spacing`, as MONAI, medpy and nnU-Net compute them. HD95 is the 95th percentile of the union of both
directed surface-distance sets, ASSD the mean of that union; both are NaN when either surface is empty.

Truth voxels whose id is not a class (the ignore id 255, `spine_keras.preprocess.IGNORE`) are not scored: there
the prediction counts as no class at all, so no class gains or loses overlap there and the surfaces of every
foreground class are taken as if prediction and truth were background inside that region (as the confusion matrix
of `spine_keras.metrics` leaves those voxels out).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

SURFACE_KEYS = ("dice", "iou", "hd95_mm", "assd_mm", "truth_voxels", "predicted_voxels")


def _bounding_box(mask: np.ndarray, margin: int = 1) -> tuple[slice, ...]:
    """The slices around a non-empty mask's true voxels, widened by `margin` voxels where the array allows."""
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(int(hits[0]) - margin, 0), min(int(hits[-1]) + margin + 1, mask.shape[axis])))
    return tuple(box)


def surface(mask: np.ndarray) -> np.ndarray:
    """The boundary voxels of a boolean mask: `mask & ~binary_erosion(mask)` with full connectivity and the
    array's edge counting as outside. The erosion by the 3x3x3 cube is done axis by axis with shifted slices (the
    cube is separable), the same result as `scipy.ndimage.binary_erosion` many times faster on large masks."""
    eroded = np.array(mask, dtype=bool)
    for axis in range(eroded.ndim):
        step = eroded.copy()
        lower = [slice(None)] * eroded.ndim
        upper = [slice(None)] * eroded.ndim
        lower[axis], upper[axis] = slice(None, -1), slice(1, None)
        step[tuple(upper)] &= eroded[tuple(lower)]
        step[tuple(lower)] &= eroded[tuple(upper)]
        edges = [slice(None)] * eroded.ndim
        edges[axis] = [0, -1]
        step[tuple(edges)] = False
        eroded = step
    return mask & ~eroded


def _reach(box: tuple[slice, ...], shape: tuple[int, ...], margin: int, spacing: Sequence[float]) -> float:
    """A distance (mm) below which every voxel outside `box` lies farther from the voxels it was widened around
    by `margin` (sides clipped at the array's edge have nothing beyond them)."""
    open_sides = [
        spacing[a] * (margin + 1)
        for a, cut in enumerate(box)
        for clipped in (cut.start == 0, cut.stop == shape[a])
        if not clipped
    ]
    return min(open_sides, default=math.inf)


def directed_distances(query: np.ndarray, target: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """The distance in mm from every voxel of surface `query` to the nearest voxel of surface `target` (non-empty).

    Voxels on both surfaces are at 0. The others get `distance_transform_edt(~target, sampling=spacing)` on a crop
    around them, widened until every distance found is shorter than the way out of the crop, so it is exact.
    """
    points = query & ~target
    zeros = np.zeros(int(np.count_nonzero(query & target)))
    margin = 8
    while points.any():
        box = _bounding_box(points, margin)
        reach = _reach(box, points.shape, margin, spacing)
        if target[box].any():
            found = ndimage.distance_transform_edt(~target[box], sampling=spacing)[points[box]]
            if found.max() <= reach:
                return np.concatenate([zeros, found])
        margin *= 2
    return zeros


def surface_distances(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Both directed surface-distance sets (pred -> truth, then truth -> pred) of two non-empty masks, in mm.

    Both masks are cropped to the bounding box of their union plus one voxel first: every surface voxel lies
    inside it and the one-voxel margin keeps the erosion unchanged, so the distances are exact.
    """
    box = _bounding_box(pred | truth)
    pred_surface, truth_surface = surface(pred[box]), surface(truth[box])
    to_truth = directed_distances(pred_surface, truth_surface, spacing)
    return np.concatenate([to_truth, directed_distances(truth_surface, pred_surface, spacing)])


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def class_metrics(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """Dice, IoU (NaN when both masks are empty), HD95 and ASSD in mm (NaN when either is empty) and the counts."""
    predicted, actual = int(np.count_nonzero(pred)), int(np.count_nonzero(truth))
    both = int(np.count_nonzero(pred & truth))
    hd95 = assd = math.nan
    if predicted and actual:
        distances = surface_distances(pred, truth, spacing)
        hd95, assd = float(np.percentile(distances, 95)), float(distances.mean())
    return {
        "dice": _ratio(2 * both, predicted + actual),
        "iou": _ratio(both, predicted + actual - both),
        "hd95_mm": hd95,
        "assd_mm": assd,
        "truth_voxels": actual,
        "predicted_voxels": predicted,
    }


def surface_metrics(
    pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | None, n_classes: int
) -> dict[int, dict[str, float]]:
    """Per class id c in 0..n_classes-1: {"dice", "iou", "hd95_mm", "assd_mm", "truth_voxels",
    "predicted_voxels"} of label maps `pred` and `truth` (same shape, class ids) with voxel `spacing` in mm (one
    value per axis; None for unit spacing). Voxels whose truth is outside 0..n_classes-1 (ignored) are left out."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    spacing = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * pred.ndim
    if len(spacing) != pred.ndim:
        raise ValueError(f"{len(spacing)} spacing value(s) for a {pred.ndim}D label map")
    scored = (truth >= 0) & (truth < n_classes)
    return {c: class_metrics((pred == c) & scored, truth == c, spacing) for c in range(n_classes)}
