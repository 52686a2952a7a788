"""Surface metrics (spine_keras.surface) against hand-computed cases and a brute-force reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from spine_keras.surface import surface, surface_metrics


def cubes(shift_axis: int, shift: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Truth: a 10x10x10 cube; prediction: the same cube moved `shift` voxels along `shift_axis`."""
    truth = np.zeros((20, 20, 20), np.uint8)
    truth[2:12, 2:12, 2:12] = 1
    return np.roll(truth, shift, axis=shift_axis), truth


def test_cube_shifted_along_the_coarse_axis():
    """Cubes A (truth) and B (prediction, A moved 3 voxels along axis 0), spacing (2, 1, 1) mm.

    Each surface is the cube's shell: 1000 - 8^3 = 488 voxels. By symmetry both directed sets are equal; from B
    to A, with X the global index along axis 0 (B covers X = 3..12, A covers 0..9) and (j, k) within the face:
    - shell voxels on B's side faces (j or k on the edge; 36 per slice): on A's side face as well for X = 3..9
      (7 x 36 = 252 at 0 mm), and at X = 10, 11, 12 one, two, three voxels past A's face X = 9: 36 each at
      2, 4, 6 mm;
    - B's far cap X = 12 (j, k inside, 64 voxels): 6 mm from A's face X = 9;
    - B's near cap X = 3 lies inside A: the nearest A face is a side face at a = min(j, 9-j, k, 9-k) mm
      (1..4 mm, always under the 6 mm to A's face X = 0): a = 1, 2, 3, 4 for 28, 20, 12, 4 voxels.
    Sorted: 0 mm x252, 1 x28, 2 x56, 3 x12, 4 x40, 6 x100 (488). HD95 of the union (each value twice, 976):
    the 95th percentile sits at rank 926.25, past 2 x 388 = 776, so 6 mm = the shift; ASSD = (36 x (2 + 4 + 6)
    + 64 x 6 + 28 + 40 + 36 + 16) / 488 = 936 / 488 = 117/61 mm. Dice = 2 x 700 / 2000, IoU = 700 / 1300.
    """
    pred, truth = cubes(shift_axis=0)
    found = surface_metrics(pred, truth, (2.0, 1.0, 1.0), 2)[1]
    assert found["hd95_mm"] == pytest.approx(6.0)
    assert found["assd_mm"] == pytest.approx(117 / 61)
    assert found["dice"] == pytest.approx(0.7) and found["iou"] == pytest.approx(7 / 13)
    assert found["truth_voxels"] == found["predicted_voxels"] == 1000


def test_cube_shifted_along_a_fine_axis_is_closer():
    """The same 3-voxel shift along axis 1 (1 mm voxels), spacing still (2, 1, 1) mm. From B to A: side faces
    (i or k on the edge) 252 at 0 mm and 36 each at 1, 2, 3 mm; far cap 64 at 3 mm; near cap (inside A) at
    min(3, 2 x a_i, a_k) with a = min(n, 9-n) in 1..4 (each twice): 16 at 1 mm, 24 at 2 mm, 24 at 3 mm.
    Sorted: 0 x252, 1 x52, 2 x60, 3 x124; the 95th percentile of the doubled set (rank 926.25 > 2 x 364) is 3 mm;
    ASSD = (36 x 6 + 64 x 3 + 16 + 48 + 72) / 488 = 544 / 488 = 68/61 mm."""
    pred, truth = cubes(shift_axis=1)
    found = surface_metrics(pred, truth, (2.0, 1.0, 1.0), 2)[1]
    assert found["hd95_mm"] == pytest.approx(3.0)
    assert found["assd_mm"] == pytest.approx(68 / 61)


def test_one_dimensional_segments():
    """Truth [5, 9], prediction [8, 12] at 2 mm: surfaces {5, 9} and {8, 12}; distances pred -> truth 2, 6 mm,
    truth -> pred 6, 2 mm: ASSD 4 mm, HD95 6 mm (rank 2.85 of [2, 2, 6, 6])."""
    truth, pred = np.zeros(20, np.uint8), np.zeros(20, np.uint8)
    truth[5:10], pred[8:13] = 1, 1
    found = surface_metrics(pred, truth, (2.0,), 2)[1]
    assert found["assd_mm"] == pytest.approx(4.0) and found["hd95_mm"] == pytest.approx(6.0)
    assert found["dice"] == pytest.approx(2 * 2 / 10)


def brute_force(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Both directed surface-distance sets by comparing every surface voxel with every other, in mm."""
    erode = ndimage.generate_binary_structure(pred.ndim, pred.ndim)
    points = [np.argwhere(m & ~ndimage.binary_erosion(m, erode)) * np.array(spacing) for m in (pred, truth)]
    distances = cdist(points[0], points[1])
    return np.concatenate([distances.min(axis=1), distances.min(axis=0)])


def blobs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two noisy overlapping label maps with 3 classes, a far stray blob in the prediction and classes that
    touch the array's edge."""
    rng = np.random.default_rng(seed)
    shape = (30, 26, 22)
    truth = (ndimage.gaussian_filter(rng.normal(size=shape), 3) > 0.02).astype(np.uint8)
    truth[10:16, 8:14, 0:6] = 2
    pred = (ndimage.gaussian_filter(rng.normal(size=shape), 3) > 0.0).astype(np.uint8) | truth
    pred[12:17, 9:15, 0:5] = 2
    pred[27:30, 0:3, 19:22] = 2  # far from every class-2 voxel of the truth
    return pred, truth


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_brute_force_with_anisotropic_spacing(seed):
    pred, truth = blobs(seed)
    spacing = (2.5, 0.7, 1.3)
    found = surface_metrics(pred, truth, spacing, 3)
    for c in range(3):
        distances = brute_force(pred == c, truth == c, spacing)
        assert found[c]["hd95_mm"] == pytest.approx(np.percentile(distances, 95))
        assert found[c]["assd_mm"] == pytest.approx(distances.mean())


def test_far_apart_masks_widen_the_crop_until_exact():
    """Two 5-voxel cubes 26 voxels apart: the distance transform's crop around each surface must grow past the
    gap; the nearest voxel of the other cube's face is exactly X - 4 voxels away along axis 0 for every voxel X."""
    truth, pred = np.zeros((40, 9, 9), np.uint8), np.zeros((40, 9, 9), np.uint8)
    truth[0:5, 2:7, 2:7], pred[30:35, 2:7, 2:7] = 1, 1
    found = surface_metrics(pred, truth, (0.5, 1.0, 1.0), 2)[1]
    distances = brute_force(pred == 1, truth == 1, (0.5, 1.0, 1.0))
    assert distances.min() == pytest.approx(13.0)  # 26 voxels of 0.5 mm between the facing sides
    assert found["hd95_mm"] == pytest.approx(np.percentile(distances, 95))
    assert found["assd_mm"] == pytest.approx(distances.mean())


def test_a_nearer_surface_just_outside_the_first_crop_is_found():
    """2D, spacing (1, 10) mm: the prediction's nearest truth is a block 13 voxels (13 mm) down axis 0, beyond the
    first crop, while another truth block 8 voxels (80 mm) along axis 1 lies inside it: 80 mm must not be kept."""
    pred, truth = np.zeros((40, 30), np.uint8), np.zeros((40, 30), np.uint8)
    pred[5:8, 10:13] = 1
    truth[5:8, 20:23], truth[20:23, 10:13] = 1, 1
    found = surface_metrics(pred, truth, (1.0, 10.0), 2)[1]
    distances = brute_force(pred == 1, truth == 1, (1.0, 10.0))
    assert found["hd95_mm"] == pytest.approx(np.percentile(distances, 95))
    assert found["assd_mm"] == pytest.approx(distances.mean())


def test_surface_is_the_boundary_of_full_connectivity_erosion():
    pred, truth = blobs(2)
    structure = ndimage.generate_binary_structure(3, 3)
    for mask in (pred == 0, pred == 1, truth == 2):
        np.testing.assert_array_equal(surface(mask), mask & ~ndimage.binary_erosion(mask, structure))


@pytest.mark.parametrize(
    "case, pred_label, truth_label, dice",
    [
        ("empty prediction", 0, 1, 0.0),
        ("empty truth", 1, 0, 0.0),
        ("both empty", 0, 0, math.nan),
    ],
)
def test_empty_masks_give_nan_distances(case, pred_label, truth_label, dice):
    """Class 2 is empty in the prediction, the truth or both: no surface distance; Dice 0 (NaN if both empty)."""
    pred, truth = cubes(shift_axis=0)
    pred[pred == 1], truth[truth == 1] = 2 if pred_label else 0, 2 if truth_label else 0
    found = surface_metrics(pred, truth, (1.0, 1.0, 1.0), 3)[2]
    assert math.isnan(found["hd95_mm"]) and math.isnan(found["assd_mm"]), case
    assert found["dice"] == pytest.approx(dice, nan_ok=True) and found["iou"] == pytest.approx(dice, nan_ok=True)
    assert found["predicted_voxels"] == 1000 * pred_label and found["truth_voxels"] == 1000 * truth_label
    assert not math.isnan(surface_metrics(pred, truth, None, 3)[0]["hd95_mm"])  # background is in both


def test_shape_or_spacing_mismatch_is_refused():
    with pytest.raises(ValueError, match="differs from truth shape"):
        surface_metrics(np.zeros((3, 3)), np.zeros((3, 4)), None, 2)
    with pytest.raises(ValueError, match="2 spacing value"):
        surface_metrics(np.zeros((3, 3, 3)), np.zeros((3, 3, 3)), (1.0, 1.0), 2)
