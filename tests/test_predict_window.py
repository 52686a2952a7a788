"""Sliding window: window grid, Gaussian importance map, stitching without seams; flip TTA over the flips seen in
training (recorded by training in the bundle) or over all."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from spine_keras import grid
from spine_keras.augment import AugmentConfig
from spine_keras.bundle import ModelBundle, read_bundle
from spine_keras.errors import UserError
from spine_keras.predict.model import Segmenter, load_segmenter
from spine_keras.predict.window import gaussian_importance, sliding_window, weight_sum
from spine_keras.prepare import SamplingConfig
from spine_keras.preprocess import PreprocessConfig
from spine_keras.train.job import train_flips


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
    tta = Segmenter(tiny_bundle(), [ramp_model], tta="all").predict(np.zeros((2, 16, 16, 1)))
    np.testing.assert_allclose(tta, 7.5)
    equivariant = Segmenter(tiny_bundle(), [lambda b: np.concatenate([b, -b], axis=-1)], tta="all")
    x = np.random.default_rng(2).normal(size=(2, 16, 16, 1)).astype(np.float32)
    np.testing.assert_allclose(equivariant.predict(x), np.concatenate([x, -x], axis=-1), rtol=1e-5, atol=1e-6)


def ramps_model(batch: np.ndarray) -> np.ndarray:
    """A 3D "model" that ignores its input: class 0 scores a ramp along sample axis 0, class 1 along axis 2."""
    n, d, h, w, _ = batch.shape
    along_0 = np.broadcast_to(np.arange(d, dtype=np.float32)[None, :, None, None], (n, d, h, w))
    along_2 = np.broadcast_to(np.arange(w, dtype=np.float32)[None, None, None, :], (n, d, h, w))
    return np.stack([along_0, along_2], axis=-1)


def flipped_bundle(train_flips: tuple[int, ...] | None) -> ModelBundle:
    """A 2-class 3D bundle (16 x 16 x 16) that records `train_flips`."""
    return ModelBundle(
        arch="u1",
        input_shape=(16, 16, 16, 1),
        class_names=("background", "vertebra"),
        preprocess=PreprocessConfig(),
        sampling=SamplingConfig(mode="3d", shape=(16, 16, 16)),
        train_flips=train_flips,
    )


def test_tta_averages_only_the_flips_seen_in_training():
    """Trained with flips of axis 2 only: TTA averages the identity and the axis-2 flip, so the ramp along axis 2
    becomes its mean 7.5 and the ramp along axis 0 is untouched; 'all' flattens both (8 passes)."""
    batch = np.zeros((2, 16, 16, 16, 1), np.float32)
    train = Segmenter(flipped_bundle((2,)), [ramps_model], tta="train")
    assert train.flips == [(), (2,)]
    out = train.predict(batch)
    np.testing.assert_array_equal(out[..., 0], ramps_model(batch)[..., 0])
    np.testing.assert_allclose(out[..., 1], 7.5)
    every = Segmenter(flipped_bundle((2,)), [ramps_model], tta="all")
    assert len(every.flips) == 8
    np.testing.assert_allclose(every.predict(batch), 7.5)
    assert Segmenter(flipped_bundle((0, 2)), [ramps_model], tta="train").flips == [(), (0,), (2,), (0, 2)]


@pytest.mark.parametrize(
    ("train_flips", "match"),
    [((), "saw no flipped samples in training"), (None, "does not record which flips")],
)
def test_tta_is_refused_without_training_flips_unless_all(train_flips, match):
    with pytest.raises(UserError, match=match):
        Segmenter(flipped_bundle(train_flips), [ramps_model], tta="train")
    assert len(Segmenter(flipped_bundle(train_flips), [ramps_model], tta="all").flips) == 8
    assert Segmenter(flipped_bundle(train_flips), [ramps_model]).flips == [()]


def test_load_segmenter_reads_the_flips_from_the_run(write_bundle, constant_model, tmp_path):
    folder = write_bundle(tmp_path / "run", constant_model((16, 16, 16, 1), [0.0, 1.0]), "3d")
    read_bundle(folder).replace(train_flips=(2,)).write(folder)
    assert load_segmenter(folder, tta="train").flips == [(), (2,)]


def test_training_records_the_flips_of_the_cube_copies_and_the_online_augmentation():
    def flips(rank: int, cube_augment: dict, online: AugmentConfig | None) -> tuple[int, ...]:
        cube = SimpleNamespace(input_shape=(16,) * rank + (1,), attrs={"augment": cube_augment})
        return train_flips(SimpleNamespace(cube=cube, augment=online))

    assert flips(2, {"copies": 2, "flip_prob": 0.5, "flip_axes": None}, None) == (1,)  # default: the last axis
    assert flips(3, {"copies": 2, "flip_prob": 0.5, "flip_axes": [0, -1]}, None) == (0, 2)
    assert flips(3, {"copies": 0, "flip_prob": 0.5, "flip_axes": [0]}, None) == ()  # no copies, no flips
    assert flips(3, {"copies": 1, "flip_prob": 0.0, "flip_axes": [0]}, AugmentConfig(flip_axes=(1,))) == (1,)
    assert flips(2, {"copies": 0}, AugmentConfig(flip_prob=0.0)) == ()
