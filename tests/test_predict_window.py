"""Sliding window: window grid, Gaussian importance map, stitching without seams, flip TTA (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from spine_keras import grid
from spine_keras.bundle import ModelBundle
from spine_keras.predict.model import Segmenter
from spine_keras.predict.window import gaussian_importance, sliding_window, weight_sum
from spine_keras.prepare import SamplingConfig
from spine_keras.preprocess import PreprocessConfig


def test_window_starts_cover_the_axis_and_end_flush():
    assert grid.starts(10, 4, grid.step_for_overlap(4, 0.5)) == [0, 2, 4, 6]
    assert grid.starts(11, 4, grid.step_for_overlap(4, 0.5)) == [0, 2, 4, 6, 7]
    assert grid.starts(11, 4, grid.step_for_overlap(4, 0.0)) == [0, 4, 7]
    assert grid.starts(3, 4, 2) == [0]
    assert grid.corners((5, 11), (4, 4), (2, 4)) == [(0, 0), (0, 4), (0, 7), (1, 0), (1, 4), (1, 7)]
    with pytest.raises(ValueError, match="overlap"):
        grid.step_for_overlap(4, 1.0)


def test_gaussian_importance_values():
    # side 8 -> sigma 1, voxel centres at -3.5..3.5; peak (at +-0.5) scaled to 1
    weights = gaussian_importance([8])
    expected = np.exp(-0.5 * (np.arange(8) - 3.5) ** 2) / np.exp(-0.125)
    np.testing.assert_allclose(weights, expected, rtol=1e-6)
    assert weights[0] == pytest.approx(np.exp(-6.0), rel=1e-6)
    cube = gaussian_importance([8, 8, 8])
    assert cube.max() == pytest.approx(1.0) and cube.min() == pytest.approx(1e-3)  # corner exp(-18) is floored
    np.testing.assert_allclose(cube[3, 4, :], expected * expected[3] * expected[4], rtol=1e-6)


def test_weight_sum_at_borders_is_the_sum_of_covering_windows():
    # side 4 -> sigma 0.5, centres at +-1.5, +-0.5 -> weights [e^-4, 1, 1, e^-4]; windows start at 0, 2, 4, 6
    edge = np.exp(-4.0)
    np.testing.assert_allclose(gaussian_importance([4]), [edge, 1, 1, edge], rtol=1e-6)
    total = weight_sum([10], [4], 0.5, gaussian_importance([4]))
    np.testing.assert_allclose(
        total, [edge, 1, 1 + edge, 1 + edge, 1 + edge, 1 + edge, 1 + edge, 1 + edge, 1, edge], rtol=1e-6
    )
    # the last window is pulled back flush with the end: side 11 -> starts 0, 2, 4, 6, 7; voxel 7 is the last
    # voxel of window 4, the second of window 6 and the first of window 7
    total = weight_sum([11], [4], 0.5, gaussian_importance([4]))
    np.testing.assert_allclose(total[-4:], [edge + 1 + edge, 1 + 1, edge + 1, edge], rtol=1e-6)


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.75])
def test_constant_model_gives_constant_map_without_seams(overlap):
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(2, 37, 29, 23, 1)).astype(np.float32)
    constant = np.array([0.2, 0.3, 0.5], np.float32)
    out = sliding_window(
        samples,
        (16, 16, 16),
        lambda b: np.broadcast_to(constant, b.shape[:-1] + (3,)),
        3,
        overlap=overlap,
        batch_size=3,
    )
    assert out.shape == (2, 37, 29, 23, 3)
    np.testing.assert_allclose(out, np.broadcast_to(constant, out.shape), rtol=1e-5)


def test_identity_model_puts_every_window_back_in_place():
    samples = np.random.default_rng(1).normal(size=(3, 50, 41, 2)).astype(np.float32)
    out = sliding_window(samples, (16, 24), lambda b: b, 2, overlap=0.5, batch_size=5)
    np.testing.assert_allclose(out, samples, rtol=1e-5, atol=1e-6)


def tiny_bundle(window: tuple[int, int] = (16, 16)) -> ModelBundle:
    """A 2-class, 2D bundle: all the Segmenter reads is its rank and class count."""
    return ModelBundle(
        arch="u1",
        input_shape=(*window, 1),
        class_names=("background", "vertebra"),
        preprocess=PreprocessConfig(),
        sampling=SamplingConfig(mode="2d", shape=window),
    )


def test_flip_tta_averages_back_flipped_predictions():
    ramp = np.arange(16, dtype=np.float32)  # a "model" that ignores its input and outputs a ramp along axis 1

    def ramp_model(batch: np.ndarray) -> np.ndarray:
        out = np.broadcast_to(ramp[None, :, None, None], batch.shape[:-1] + (1,))
        return np.concatenate([out, 15 - out], axis=-1)

    plain = Segmenter(tiny_bundle(), [ramp_model]).predict(np.zeros((2, 16, 16, 1)))
    np.testing.assert_array_equal(plain[0, :, 0, 0], ramp)
    # each flip of axis 1 is undone before averaging: half the passes see [0..15], half [15..0] flipped back
    tta = Segmenter(tiny_bundle(), [ramp_model], tta=True).predict(np.zeros((2, 16, 16, 1)))
    np.testing.assert_allclose(tta, 7.5)
    equivariant = Segmenter(tiny_bundle(), [lambda b: np.concatenate([b, -b], axis=-1)], tta=True)
    x = np.random.default_rng(2).normal(size=(2, 16, 16, 1)).astype(np.float32)
    np.testing.assert_allclose(equivariant.predict(x), np.concatenate([x, -x], axis=-1), rtol=1e-5, atol=1e-6)
