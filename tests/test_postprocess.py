"""Post-processing of predicted label maps: the largest component per class, and islands below a volume in ml."""

from __future__ import annotations

import numpy as np
import pytest

from spine_keras.errors import UserError
from spine_keras.predict.postprocess import Postprocess, keep_largest, postprocess_labels, remove_small


def blobs() -> np.ndarray:
    """Class 1: a 4x4x4 blob (64 voxels) and a 2x2x2 one (8); class 2: a 3x3x3 blob (27) and a single voxel."""
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[1:5, 1:5, 1:5] = 1
    labels[10:12, 10:12, 10:12] = 1
    labels[14:17, 2:5, 2:5] = 2
    labels[18, 18, 18] = 2
    return labels


def test_largest_keeps_each_class_biggest_blob() -> None:
    labels = blobs()
    kept = keep_largest(labels)
    expected = labels.copy()
    expected[10:12, 10:12, 10:12] = 0
    expected[18, 18, 18] = 0
    np.testing.assert_array_equal(kept, expected)
    assert np.count_nonzero(kept == 1) == 64 and np.count_nonzero(kept == 2) == 27
    np.testing.assert_array_equal(labels, blobs())  # the input is left alone


def test_min_size_removes_exactly_the_components_below_the_volume() -> None:
    """0.5 x 0.5 x 2 mm voxels are 0.5 mm3: 64 voxels = 0.032 ml, 8 = 0.004 ml, 27 = 0.0135 ml, 1 = 0.0005 ml."""
    labels, spacing = blobs(), (0.5, 0.5, 2.0)
    cleaned = remove_small(labels, spacing, 0.0135)  # 27 voxels is exactly 0.0135 ml: kept
    expected = labels.copy()
    expected[10:12, 10:12, 10:12] = 0
    expected[18, 18, 18] = 0
    np.testing.assert_array_equal(cleaned, expected)
    single = labels.copy()
    single[18, 18, 18] = 0
    np.testing.assert_array_equal(remove_small(labels, spacing, 0.004), single)  # 8 voxels = 4 mm3: kept
    assert np.count_nonzero(remove_small(labels, spacing, 0.0041)) == 64 + 27
    assert np.count_nonzero(remove_small(labels, (1.0, 1.0, 1.0), 0.0041)) == 64 + 8 + 27  # 8 mm3 > 4.1 mm3
    assert not remove_small(labels, spacing, 1.0).any()


def test_components_touching_at_a_corner_are_one() -> None:
    labels = np.zeros((6, 6, 6), np.uint8)
    labels[1, 1, 1] = labels[2, 2, 2] = 1  # corner to corner
    labels[4, 4, 4] = 1
    kept = keep_largest(labels)
    assert kept[1, 1, 1] == kept[2, 2, 2] == 1 and kept[4, 4, 4] == 0


@pytest.mark.parametrize(
    ("spec", "kind", "min_ml", "text"),
    [
        ("none", "none", 0.0, "none"),
        ("Largest", "largest", 0.0, "largest"),
        ("min-size:0.5", "min-size", 0.5, "min-size:0.5"),
    ],
)
def test_spec_is_parsed_and_written_back(spec: str, kind: str, min_ml: float, text: str) -> None:
    parsed = Postprocess.parse(spec)
    assert (parsed.kind, parsed.min_ml, str(parsed)) == (kind, min_ml, text)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("biggest", "must be none, largest or min-size:ML, not 'biggest'"),
        ("largest:2", "only min-size takes a value"),
        ("min-size", "write min-size:ML"),
        ("min-size:abc", "write min-size:ML"),
        ("min-size:-1", "a volume >= 0 in millilitres"),
        ("min-size:nan", "a volume >= 0 in millilitres"),
    ],
)
def test_bad_specs_are_refused_in_one_line(spec: str, match: str) -> None:
    with pytest.raises(UserError, match=match):
        Postprocess.parse(spec)


def test_none_returns_the_labels_unchanged() -> None:
    labels = blobs()
    assert postprocess_labels(labels, (1.0, 1.0, 1.0), "none") is labels
    np.testing.assert_array_equal(postprocess_labels(labels, (1.0, 1.0, 1.0), "largest"), keep_largest(labels))
