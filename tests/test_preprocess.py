"""Resampling, normalization, label maps, ROI crop and shape fitting, with hand-checked numbers."""

from __future__ import annotations

import numpy as np
import pytest

from spine_keras.errors import CaseError, UserError
from spine_keras.preprocess import LabelMap, PreprocessConfig, fit_shape, normalize, resample, resize, roi_slices


def test_resample_halves_grid_and_keeps_values() -> None:
    ramp = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((1, 4, 4), np.float32)
    out = resample(ramp, (1.0, 1.0, 1.0), (2.0, 1.0, 1.0), order=1)
    assert out.shape == (5, 4, 4)
    np.testing.assert_allclose(out[:, 0, 0], [0, 2, 4, 6, 8])
    fine = resample(ramp, (1.0, 1.0, 1.0), (0.5, 1.0, 1.0), order=1)
    assert fine.shape == (20, 4, 4)
    np.testing.assert_allclose(fine[:4, 0, 0], [0, 0.5, 1.0, 1.5])


def test_resample_label_nearest_keeps_ids() -> None:
    label = np.zeros((9, 9, 9), np.uint8)
    label[2:6, 2:6, 2:6] = 3
    out = resample(label, (1, 1, 1), (0.7, 1.3, 1.0), order=0)
    assert out.dtype == np.uint8
    assert set(np.unique(out)) == {0, 3}
    assert out.shape == (13, 7, 9)


def test_normalizations() -> None:
    x = np.array([0, 1, 2, 3, 4, 100], np.float32)
    z = normalize(x, PreprocessConfig(normalization="zscore"))
    assert abs(z.mean()) < 1e-6 and abs(z.std() - 1) < 1e-5
    m = normalize(x, PreprocessConfig(normalization="minmax"))
    np.testing.assert_allclose(m[[0, -1]], [0, 1])
    p = normalize(x, PreprocessConfig(normalization="percentile", percentiles=(0, 80)))
    assert p.max() == pytest.approx(1.0) and p[-1] == pytest.approx(1.0) and p[0] == 0
    assert z.dtype == m.dtype == p.dtype == np.float32
    assert np.all(normalize(np.ones(5), PreprocessConfig()) == 0)


def test_label_map_rules() -> None:
    label = np.array([0, 1, 3, 7, 8, 9])
    mapping = LabelMap.parse("1-7:1, 8:2, 9:0")
    np.testing.assert_array_equal(mapping.apply(label), [0, 1, 1, 1, 2, 0])
    assert mapping.n_classes == 3
    np.testing.assert_array_equal(LabelMap.parse("1-3:1,*:0").apply(label), [0, 1, 1, 0, 0, 0])


def test_label_map_errors() -> None:
    with pytest.raises(CaseError, match=r"\[8, 9\] are not covered"):
        LabelMap.parse("1-7:1").apply(np.array([0, 1, 8, 9]))
    with pytest.raises(CaseError, match="non-integer"):
        LabelMap.parse("1:1").apply(np.array([0.0, 0.5]))
    with pytest.raises(CaseError, match="outside the 2 classes"):
        LabelMap.parse(None).apply(np.array([0, 1, 2], np.uint8), n_classes=2)
    for spec in ("1-7", "a:1", "7-1:1"):
        with pytest.raises(UserError):
            LabelMap.parse(spec)
    np.testing.assert_array_equal(LabelMap.parse(None).apply(np.array([0.0, 2.0])), [0, 2])


def test_roi_slices_with_margin_in_mm() -> None:
    label = np.zeros((20, 20, 20), np.uint8)
    label[5:8, 10:12, 0:3] = 1
    box = roi_slices(label, (1.0, 2.0, 1.0), margin_mm=4)
    assert box == (slice(1, 12), slice(8, 14), slice(0, 7))


def test_fit_shape_resize_and_pad() -> None:
    x = np.arange(16, dtype=np.float32).reshape(4, 4)
    assert resize(x, (8, 8), 1).shape == (8, 8)
    np.testing.assert_allclose(resize(resize(x, (8, 8), 1), (4, 4), 1)[1:3, 1:3], x[1:3, 1:3], atol=1e-5)
    padded = fit_shape(x, (6, 2), "pad", 1, fill=-1)
    np.testing.assert_array_equal(padded[:, 0], [-1, 1, 5, 9, 13, -1])
    np.testing.assert_array_equal(padded[:, 1], [-1, 2, 6, 10, 14, -1])
    label = np.zeros((5, 5), np.uint8)
    label[1:4, 1:4] = 2
    assert set(np.unique(fit_shape(label, (16, 16), "resize", 0))) == {0, 2}


def test_config_round_trip_and_validation() -> None:
    config = PreprocessConfig(spacing=(1.0, 1.0, 2.0), normalization="percentile", fit="pad")
    assert PreprocessConfig.from_dict(config.to_dict()) == config
    with pytest.raises(UserError):
        PreprocessConfig(normalization="nope")
    with pytest.raises(UserError):
        PreprocessConfig(percentiles=(50, 10))
