"""Label-free region of interest: the box around the body, found from the image alone.

Two Otsu thresholds split the intensities into air, tissue and bright tissue (fat, fluid); everything above the
lower one is body. (One Otsu threshold falls between tissue and fluid on T2 images and keeps only the bright fat,
losing the vertebrae.) Then a binary opening in millimetres (cuts speckle and thin bridges), the largest connected
component, and its bounding box grown by a margin in mm and clipped to the volume. Deterministic and
label-free, so the cube builder and prediction crop every volume the same way (see `spine_keras.prepare`), unlike
the label-based `--crop-roi` which prediction cannot repeat. No Keras; SimpleITK and scipy.ndimage do the numerics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

OPENING_MM = 2.0  # radius of the opening: removes bright specks and bridges thinner than about 4 mm
Box = tuple[slice, ...]


def body_mask(image: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """The largest connected region of tissue in `image` (above the lower of two Otsu thresholds), after an opening;
    bool, the image's shape. Empty when the image holds no such region (a constant volume)."""
    import SimpleITK as sitk  # here, not at the top: commands validate their flags without loading SimpleITK
    from scipy import ndimage

    classes = sitk.OtsuMultipleThresholdsImageFilter()
    classes.SetNumberOfThresholds(2)
    mask = sitk.GetArrayFromImage(classes.Execute(sitk.GetImageFromArray(np.asarray(image, np.float32)))) > 0
    structure = ellipsoid([OPENING_MM / float(s) for s in spacing])
    if structure.size > 1:  # scipy's opening: several times faster than SimpleITK's here
        mask = ndimage.binary_opening(mask, structure)
    components = sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)))
    return sitk.GetArrayFromImage(sitk.RelabelComponent(components, sortByObjectSize=True)) == 1


def ellipsoid(radius: Sequence[float]) -> np.ndarray:
    """A bool structuring element: the voxels within `radius` (in voxels, per axis; rounded down) of the centre."""
    whole = [int(r) for r in radius]
    grid = np.ogrid[tuple(slice(-r, r + 1) for r in whole)]
    return sum((axis / max(r, 1)) ** 2 for axis, r in zip(grid, whole)) <= 1


def box_of(mask: np.ndarray, spacing: Sequence[float], margin_mm: float) -> Box:
    """The bounding box of `mask` grown by `margin_mm` on every side (rounded up to whole voxels), clipped to the
    volume; the whole volume when the mask is empty."""
    found = np.nonzero(mask)
    if not found[0].size:
        return tuple(slice(0, n) for n in mask.shape)
    box = []
    for n, coords, step in zip(mask.shape, found, spacing):
        margin = math.ceil(margin_mm / float(step) - 1e-9)
        box.append(slice(max(0, int(coords.min()) - margin), min(n, int(coords.max()) + 1 + margin)))
    return tuple(box)


def body_box(image: np.ndarray, spacing: Sequence[float], margin_mm: float) -> Box:
    """The region of interest of `image`: its body's bounding box plus `margin_mm`, as slices of the array."""
    return box_of(body_mask(image, spacing), spacing, margin_mm)
