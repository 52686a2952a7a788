"""Augmentation: exact identities, known geometry, label safety, reproducibility, intensity-only transforms."""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from scipy import ndimage

from spine_keras.augment import AugmentConfig, AugmentParams, affine_matrix, apply, augment, resample, sample_params

OFF = dict(rotation=0.0, zoom=(1.0, 1.0), flip_prob=0.0, shift=0.0, noise_prob=0.0, blur_prob=0.0, intensity_prob=0.0)


def params(ndim: int, **changes) -> AugmentParams:
    """Identity parameters with some fields changed."""
    base = AugmentParams.identity(ndim).to_dict()
    return AugmentParams.from_dict({**base, **changes})


def pair(shape: tuple[int, ...], seed: int = 0, classes=(0, 3, 7)) -> tuple[np.ndarray, np.ndarray]:
    """A random float32 image and a blocky uint8 label with the given class ids."""
    rng = np.random.default_rng(seed)
    image = rng.standard_normal(shape).astype(np.float32)
    coarse = rng.choice(np.array(classes, np.uint8), size=tuple(-(-n // 4) for n in shape))
    label = np.kron(coarse, np.ones((4,) * len(shape), np.uint8))[tuple(slice(0, n) for n in shape)]
    return image, np.ascontiguousarray(label)


def square(shape: tuple[int, ...], lo: tuple[int, ...], size: int) -> np.ndarray:
    """Zeros with a block of ones of side `size` starting at `lo`."""
    out = np.zeros(shape, np.float32)
    out[tuple(slice(a, a + size) for a in lo)] = 1
    return out


def centroid(array: np.ndarray) -> np.ndarray:
    """Intensity-weighted centre of mass, in voxel indices."""
    return np.array(ndimage.center_of_mass(array))


@pytest.mark.parametrize("shape", [(24, 20), (12, 10, 8)])
def test_identity_params_give_the_input_back(shape):
    image, label = pair(shape)
    out, out_label = apply(image, label, AugmentParams.identity(len(shape)))
    np.testing.assert_array_equal(out, image)
    np.testing.assert_array_equal(out_label, label)
    assert out is not image and out_label is not label
    out[...] = 0
    assert image.any()


@pytest.mark.parametrize("shape", [(24, 20), (12, 10, 8)])
def test_zero_ranges_give_the_input_back(shape):
    image, label = pair(shape)
    config = AugmentConfig(**{**OFF, "zoom": (1, 1)})
    out, out_label = augment(image, label, config, np.random.default_rng(3))
    np.testing.assert_array_equal(out, image)
    np.testing.assert_array_equal(out_label, label)


@pytest.mark.parametrize("size", [33, 32])
def test_rotation_90_is_rot90_in_2d(size):
    image, label = pair((size, size))
    out, out_label = apply(image, label, params(2, rotation=[90.0]))
    np.testing.assert_allclose(out, np.rot90(image), atol=1e-5)
    np.testing.assert_array_equal(out_label, np.rot90(label))


@pytest.mark.parametrize("axis, plane", [(0, (1, 2)), (1, (0, 2)), (2, (0, 1))])
def test_rotation_90_about_each_axis_is_rot90_in_3d(axis, plane):
    image, label = pair((12, 12, 12))
    angles = [0.0, 0.0, 0.0]
    angles[axis] = 90.0
    out, out_label = apply(image, label, params(3, rotation=angles))
    np.testing.assert_allclose(out, np.rot90(image, axes=plane), atol=1e-5)
    np.testing.assert_array_equal(out_label, np.rot90(label, axes=plane))


def test_rotation_20_moves_an_off_centre_square_where_geometry_says():
    image = square((64, 64), (18, 38), 5)  # centre (20, 40); volume centre (31.5, 31.5)
    out, out_label = apply(image, image.astype(np.uint8), params(2, rotation=[20.0]))
    a = math.radians(20)
    dr, dc = 20 - 31.5, 40 - 31.5
    expected = (31.5 + dr * math.cos(a) - dc * math.sin(a), 31.5 + dr * math.sin(a) + dc * math.cos(a))
    assert expected == pytest.approx((17.79, 35.55), abs=0.01)
    np.testing.assert_allclose(centroid(out), expected, atol=0.1)
    np.testing.assert_allclose(centroid(out_label), expected, atol=0.5)
    assert out.sum() == pytest.approx(25, rel=0.02)  # a rotation keeps the area


def test_affine_matrix_composes_zoom_rotation_flip_and_shift():
    p = params(2, rotation=[90.0], zoom=[2.0, 2.0], flip=[1], shift=[0.25, 0.0])
    matrix = affine_matrix(p, (9, 9))  # centre (4, 4), shift 0.25 * 9 = 2.25 rows
    # (4, 5): flip -> (4, 3); zoom -> (4, 2); rotate 90 -> (6, 4); shift -> (8.25, 4)
    np.testing.assert_allclose(matrix @ [4, 5, 1], [8.25, 4, 1], atol=1e-12)
    np.testing.assert_allclose(matrix[-1], [0, 0, 1])


@pytest.mark.parametrize("shape, axes", [((20, 16), (1,)), ((10, 8, 6), (2,)), ((10, 8, 6), (0, 2))])
def test_flip_equals_np_flip_with_and_without_resampling(shape, axes):
    image, label = pair(shape)
    p = params(len(shape), flip=list(axes))
    out, out_label = apply(image, label, p)
    np.testing.assert_array_equal(out, np.flip(image, axes))
    np.testing.assert_array_equal(out_label, np.flip(label, axes))
    inverse = np.linalg.inv(affine_matrix(p, shape))
    np.testing.assert_allclose(resample(image, inverse, 1, 0.0), np.flip(image, axes), atol=1e-6)
    np.testing.assert_array_equal(resample(label, inverse, 0, 0), np.flip(label, axes))


def test_default_flip_is_the_last_axis_about_half_the_time():
    config = AugmentConfig(**{**OFF, "flip_prob": 0.5})
    rng = np.random.default_rng(0)
    for shape in ((16, 16), (8, 16, 16)):
        flips = [sample_params(config, shape, rng).flip for _ in range(400)]
        assert set(flips) == {(), (len(shape) - 1,)}
        assert 0.42 < flips.count(()) / 400 < 0.58


@pytest.mark.parametrize("ndim", [2, 3])
def test_zoom_2_doubles_a_centred_square(ndim):
    shape = (64,) * ndim if ndim == 2 else (40, 40, 40)
    side = 16 if ndim == 2 else 10
    lo = tuple((n - side) // 2 for n in shape)
    image = square(shape, lo, side)
    out, out_label = apply(image, image.astype(np.uint8), params(ndim, zoom=[2.0] * ndim))
    for axis in range(ndim):
        other = tuple(i for i in range(ndim) if i != axis)
        assert np.count_nonzero((out > 0.5).any(axis=other)) == 2 * side
        assert np.count_nonzero(out_label.any(axis=other)) == 2 * side
    assert np.count_nonzero(out_label) == (2 * side) ** ndim


def test_out_of_field_fill_image_minimum_or_given_value_and_label_background():
    image = np.ones((32, 32), np.float32)
    image[0, 0] = -2.0
    label = np.full((32, 32), 5, np.uint8)
    out, out_label = apply(image, label, params(2, zoom=[0.5, 0.5]))
    assert out[0, 16] == -2.0 and out[16, 16] == 1.0
    assert out_label[0, 16] == 0 and out_label[16, 16] == 5
    out, _ = apply(image, label, params(2, zoom=[0.5, 0.5], fill_value=7.0))
    assert out[0, 16] == 7.0


@pytest.mark.parametrize("shape", [(40, 36), (16, 20, 12)])
def test_labels_stay_within_the_input_class_set(shape):
    image, label = pair(shape)
    rng = np.random.default_rng(1)
    for _ in range(5):
        _, out_label = augment(image, label, AugmentConfig(), rng)
        assert set(np.unique(out_label)) <= {0, 3, 7}
    assert len(np.unique(out_label)) > 1


@pytest.mark.parametrize("shape", [(40, 36), (16, 20, 12)])
def test_same_seed_same_output_different_seed_different_output(shape):
    image, label = pair(shape)
    config = AugmentConfig(noise_prob=1.0, blur_prob=1.0, intensity_prob=1.0)
    first = augment(image, label, config, np.random.default_rng(42))
    again = augment(image, label, config, np.random.default_rng(42))
    other = augment(image, label, config, np.random.default_rng(43))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_no_global_random_state_and_inputs_untouched():
    image, label = pair((16, 12, 10))
    copies = image.copy(), label.copy()
    np.random.seed(5)
    state = np.random.get_state()[1].copy()
    augment(image, label, AugmentConfig(noise_prob=1.0), np.random.default_rng(0))
    np.testing.assert_array_equal(np.random.get_state()[1], state)
    np.testing.assert_array_equal(image, copies[0])
    np.testing.assert_array_equal(label, copies[1])


def test_thread_safe_concurrent_calls_equal_sequential_ones():
    image, label = pair((48, 40))
    config = AugmentConfig(noise_prob=1.0, blur_prob=0.5)

    def one(seed: int):
        return augment(image, label, config, np.random.default_rng(seed))

    sequential = [one(seed) for seed in range(8)]
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(one, range(8)))
    for (a, b), (c, d) in zip(sequential, concurrent):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


@pytest.mark.parametrize(
    "image_shape, label_shape",
    [
        ((20, 16), (20, 16)),
        ((20, 16, 1), (20, 16)),
        ((10, 8, 6), (10, 8, 6)),
        ((10, 8, 6, 1), (10, 8, 6, 1)),
    ],
)
def test_shape_and_dtype_are_kept_with_or_without_channel_axis(image_shape, label_shape):
    rng = np.random.default_rng(0)
    image = rng.standard_normal(image_shape).astype(np.float32)
    label = rng.integers(0, 3, label_shape).astype(np.int32)
    out, out_label = augment(image, label, AugmentConfig(noise_prob=1.0, blur_prob=1.0), rng)
    assert out.shape == image_shape and out.dtype == np.float32
    assert out_label.shape == label_shape and out_label.dtype == np.int32
    out, none = augment(image, None, AugmentConfig(), rng)
    assert out.shape == image_shape and none is None


def test_bad_inputs_are_clear_errors():
    image, label = pair((8, 8))
    with pytest.raises(ValueError, match="2D or 3D"):
        sample_params(AugmentConfig(), (4, 4, 4, 4), np.random.default_rng(0))
    with pytest.raises(ValueError, match="does not match"):
        apply(image, label[:4], AugmentParams.identity(2))
    with pytest.raises(ValueError, match="not a 3D sample"):
        apply(image, label, AugmentParams.identity(3))
    with pytest.raises(TypeError, match="floating"):
        apply(label, None, AugmentParams.identity(2))
    with pytest.raises(TypeError, match="integer"):
        apply(image, image, AugmentParams.identity(2))
    with pytest.raises(ValueError, match="flip_axes"):
        sample_params(AugmentConfig(flip_axes=(3,)), (8, 8), np.random.default_rng(0))


def test_noise_changes_only_the_image_with_the_drawn_sigma_and_seed():
    image, label = pair((128, 128))
    out, out_label = apply(image, label, params(2, noise_std=0.1, noise_seed=7))
    np.testing.assert_array_equal(out_label, label)
    diff = out - image
    assert diff.std() == pytest.approx(0.1, rel=0.03) and abs(diff.mean()) < 0.003
    np.testing.assert_array_equal(apply(image, label, params(2, noise_std=0.1, noise_seed=7))[0], out)
    assert not np.array_equal(apply(image, label, params(2, noise_std=0.1, noise_seed=8))[0], out)


def test_blur_changes_only_the_image_as_a_gaussian_filter():
    image, label = pair((64, 64))
    out, out_label = apply(image, label, params(2, blur_sigma=1.0))
    np.testing.assert_array_equal(out_label, label)
    np.testing.assert_allclose(out, ndimage.gaussian_filter(image, 1.0), atol=1e-6)
    assert out.std() < 0.4 * image.std()  # white noise loses most of its variance


def test_rescale_changes_only_the_image_linearly():
    image, label = pair((20, 16, 12))
    out, out_label = apply(image, label, params(3, intensity_scale=1.5, intensity_shift=0.2))
    np.testing.assert_array_equal(out_label, label)
    np.testing.assert_allclose(out, 1.5 * image + 0.2, rtol=1e-6, atol=1e-6)


def test_sampled_params_stay_in_range_and_are_json_reproducible():
    config = AugmentConfig(noise_prob=1.0, blur_prob=1.0, intensity_prob=1.0)
    rng = np.random.default_rng(0)
    image, label = pair((20, 16, 12))
    for _ in range(50):
        p = sample_params(config, (20, 16, 12), rng)
        assert len(p.rotation) == 3 and all(abs(a) <= 20 for a in p.rotation)
        assert 0.5 <= p.zoom[0] <= 1.5 and len(set(p.zoom)) == 1
        assert all(abs(s) <= 0.1 for s in p.shift)
        assert 0 <= p.noise_std <= 0.1 and 0.5 <= p.blur_sigma <= 1.0
        assert 0.9 <= p.intensity_scale <= 1.1 and -0.1 <= p.intensity_shift <= 0.1
    assert len(sample_params(config, (16, 16), rng).rotation) == 1
    back = AugmentParams.from_dict(json.loads(json.dumps(p.to_dict())))
    assert back == p
    for a, b in zip(apply(image, label, p), apply(image, label, back)):
        np.testing.assert_array_equal(a, b)


def test_config_round_trips_through_json_and_validates():
    config = AugmentConfig(rotation=10, zoom=(0.8, 1.2), flip_axes=(0, 2), fill_value=0.0, noise_std=[0, 0.05])
    data = json.loads(json.dumps(config.to_dict()))
    assert data["zoom"] == [0.8, 1.2] and data["flip_axes"] == [0, 2]
    assert AugmentConfig.from_dict(data) == config
    assert AugmentConfig.from_dict(AugmentConfig().to_dict()) == AugmentConfig()
    assert AugmentConfig(fill_value=(3,)).fill_value == 3.0  # a one-number flag value
    with pytest.raises(ValueError, match="unknown augmentation settings: zooom"):
        AugmentConfig.from_dict({"zooom": [1, 2]})
    for bad, field in [
        ({"zoom": (1.5, 0.5)}, "zoom"),
        ({"zoom": (0, 1)}, "zoom"),
        ({"flip_prob": 1.5}, "flip_prob"),
        ({"noise_std": (-1, 0)}, "noise_std"),
        ({"rotation": -5}, "rotation"),
        ({"blur_sigma": (1,)}, "blur_sigma"),
        ({"flip_axes": (0.5,)}, "flip_axes"),
    ]:
        with pytest.raises(ValueError, match=field):
            AugmentConfig(**bad)
