"""The label-free body crop: the box holds the body and not the specks around it, is the same on every call, grows
by a margin in mm, and prediction puts its result back at the right voxels of the original volume."""

from __future__ import annotations

import numpy as np
import pytest

from spine_keras.body_crop import body_box
from spine_keras.bundle import ModelBundle
from spine_keras.errors import UserError
from spine_keras.io import Volume
from spine_keras.predict import Segmenter, predict_volume
from spine_keras.prepare import SamplingConfig, prepare
from spine_keras.preprocess import PreprocessConfig

BODY = (slice(8, 30), slice(6, 28), slice(2, 8))  # tissue at about 100
VERTEBRA = (slice(12, 20), slice(10, 18), slice(3, 7))  # bright, inside the body


def scan(shape=(40, 36, 10), seed: int = 0) -> np.ndarray:
    """Air (about 5) around a block of tissue (100) holding a bright structure (300), and a bright 2-voxel speck in
    the air that a threshold alone would include."""
    rng = np.random.default_rng(seed)
    image = rng.normal(5, 1, shape).astype(np.float32)
    image[BODY] += 95
    image[VERTEBRA] += 200
    image[36:38, 33, 9] = 300
    return image


def test_box_is_the_body_without_the_speck_and_reproducible() -> None:
    image = scan()
    box = body_box(image, (1.0, 1.0, 1.0), 0.0)
    assert box == BODY
    assert body_box(image.copy(), (1.0, 1.0, 1.0), 0.0) == box
    assert body_box(scan(seed=1), (1.0, 1.0, 1.0), 0.0) == box  # other noise, same body


def test_margin_is_in_mm_per_axis_and_clipped() -> None:
    """5 mm is 5 voxels at 1 mm, 10 at 0.5 mm and 2 at 2.5 mm; 4 mm at 3 mm rounds up to 2 voxels."""
    box = body_box(scan(), (1.0, 0.5, 2.5), 5.0)
    assert box == (slice(3, 35), slice(0, 36), slice(0, 10))
    assert body_box(scan(), (1.0, 1.0, 3.0), 4.0) == (slice(4, 34), slice(2, 32), slice(0, 10))  # 4/3 -> 2 voxels


def test_a_volume_without_a_body_keeps_its_whole_box() -> None:
    assert body_box(np.full((8, 9, 10), 7.0, np.float32), (1.0, 1.0, 1.0), 3.0) == (
        slice(0, 8),
        slice(0, 9),
        slice(0, 10),
    )


def test_prepare_crops_image_and_label_and_records_where() -> None:
    image, label = scan(), np.zeros((40, 36, 10), np.uint8)
    label[VERTEBRA] = 1
    case = prepare(
        Volume(image, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3)), PreprocessConfig(auto_crop_mm=2.0), label
    )
    assert case.box == (slice(6, 32), slice(4, 30), slice(0, 10)) and case.grid_shape == (40, 36, 10)
    assert case.image.shape == case.label.shape == (26, 26, 10)
    assert np.count_nonzero(case.label) == 8 * 8 * 4  # the label is cropped with the image, nothing lost
    assert abs(float(case.image.mean())) < 1e-5  # normalized over the crop, not the whole volume
    np.testing.assert_array_equal(case.uncrop(case.label)[VERTEBRA], 1)
    assert np.count_nonzero(case.uncrop(case.label)) == 8 * 8 * 4


def threshold_model(batch: np.ndarray) -> np.ndarray:
    """Class 1 exactly where the normalized input is above 2 (only the bright structure is), class 0 elsewhere."""
    above = (batch[..., :1] > 2.0).astype(np.float32)
    return np.concatenate([1.0 - above, above], axis=-1)


@pytest.mark.parametrize("spacing", [None, (1.0, 1.0, 0.5)])
def test_prediction_is_put_back_at_the_right_voxels(spacing) -> None:
    """The model sees only the crop (26 x 26 in-plane, padded to 32); its labels land on the structure's voxels of
    the original grid, background everywhere else, with and without resampling to another spacing."""
    bundle = ModelBundle(
        arch="u1",
        input_shape=(32, 32, 1),
        class_names=("background", "vertebra"),
        preprocess=PreprocessConfig(spacing=spacing, fit="pad", auto_crop_mm=2.0),
        sampling=SamplingConfig(mode="2d", axis=2, shape=(32, 32)),
    )
    seen: list[tuple[int, ...]] = []
    segmenter = Segmenter(bundle, [lambda batch: seen.append(batch.shape) or threshold_model(batch)])
    volume = Volume(scan(), (1.0, 1.0, 1.0), (3.0, -2.0, 1.5), np.eye(3))
    prediction = predict_volume(volume, segmenter, probabilities=True)
    expected = np.zeros((40, 36, 10), np.uint8)
    expected[VERTEBRA] = 1
    np.testing.assert_array_equal(prediction.labels.array, expected)
    assert prediction.labels.origin == volume.origin
    probabilities = prediction.probabilities.array
    assert probabilities.shape == (40, 36, 10, 2)
    np.testing.assert_array_equal(probabilities[0, 0, 0], [1.0, 0.0])  # outside the box: background
    # one window per slice: the crop fits the 32 x 32 window, the whole 40 x 36 slice would need four
    assert sum(shape[0] for shape in seen) == (10 if spacing is None else 20)


def test_make_cube_flag_sets_the_margin_and_refuses_a_second_crop() -> None:
    from spine_keras.cli import make_cube

    given = ["list.txt", "--preset", "paper"]  # a given shape: no planner reading the (absent) list
    config = make_cube.config_from_args(make_cube.parser().parse_args([*given, "--auto-crop", "7.5"]))
    assert config.preprocess.auto_crop_mm == 7.5
    assert make_cube.config_from_args(make_cube.parser().parse_args(given)).preprocess.auto_crop_mm is None
    both = make_cube.parser().parse_args([*given, "--auto-crop", "5", "--crop-roi", "5", "--fit", "pad"])
    with pytest.raises(UserError, match="--auto-crop and --crop-roi both crop the volume; choose one"):
        make_cube.config_from_args(both)
