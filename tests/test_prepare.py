"""One preprocessing path: what prediction feeds a model equals the cube's original samples of the same case, bit
for bit, for 2D slices and whole 3D volumes, with resampling, both fits and the label-free body crop."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from spine_keras.bundle import ModelBundle
from spine_keras.cube import read_attrs
from spine_keras.cube.build import CubeConfig, build_cube
from spine_keras.io import read_volume
from spine_keras.predict.volume import model_inputs
from spine_keras.prepare import SamplingConfig, prepare, stack_samples, unstack_samples
from spine_keras.preprocess import PreprocessConfig


def bundle_of(cube: Path) -> ModelBundle:
    """The bundle fields training takes from a cube's attributes."""
    attrs = read_attrs(cube)
    sampling = SamplingConfig.from_dict(attrs["sampling"])
    return ModelBundle(
        arch="u1",
        input_shape=(*sampling.shape, 1),
        class_names=tuple(attrs["class_names"]),
        preprocess=PreprocessConfig.from_dict(attrs["preprocess"]),
        sampling=sampling,
        label_map=attrs["label_map"],
    )


@pytest.mark.parametrize(
    ("preprocess", "sampling", "n_samples"),
    [
        (PreprocessConfig(spacing=(0.9, 1.3, 2.0)), SamplingConfig(mode="2d", axis=2, shape=(32, 24)), 15),
        (
            PreprocessConfig(normalization="percentile", fit="pad"),
            SamplingConfig(mode="2d", axis=0, shape=(16, 16)),
            30,
        ),
        (
            PreprocessConfig(spacing=(1.5, 1.5, 1.5), interpolation="cubic"),
            SamplingConfig(mode="3d", shape=(16, 16, 16)),
            1,
        ),
        (
            PreprocessConfig(spacing=(0.9, 1.3, 2.0), auto_crop_mm=3.0),
            SamplingConfig(mode="2d", axis=2, shape=(32, 24)),
            12,
        ),
        (PreprocessConfig(auto_crop_mm=1.0, fit="pad"), SamplingConfig(mode="3d", shape=(16, 16, 16)), 1),
    ],
)
def test_prediction_inputs_equal_the_cube_originals(make_pair, tmp_path: Path, preprocess, sampling, n_samples) -> None:
    """12 slices of 2.5 mm resampled to 2.0 mm give 15 sagittal slices (12 once cropped to the bright boxes plus
    3 mm); axis 0 keeps its 30; 3D is one volume."""
    image, label = make_pair(tmp_path, "case", shape=(30, 26, 12), spacing=(1.1, 0.8, 2.5), seed=3)
    (tmp_path / "list.txt").write_text(f"{image.name},{label.name}\n")
    cube = tmp_path / "cube.h5"
    config = CubeConfig(
        str(tmp_path / "list.txt"), str(cube), preprocess, sampling, label_map="1-2:1", copies=1, workers=1
    )
    build_cube(config, progress=False)
    bundle = bundle_of(cube)
    inputs = model_inputs(prepare(read_volume(image), bundle.preprocess), bundle)
    with h5py.File(cube, "r") as handle:
        originals = handle["images"][handle["augmented"][()] == 0]
    assert inputs.dtype == originals.dtype == np.float32
    assert inputs.shape == originals.shape == (n_samples, *sampling.shape, 1)
    np.testing.assert_array_equal(inputs, originals)


def test_stacking_along_the_slice_axis_inverts() -> None:
    volume = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    for axis in (0, 1, 2):
        sampling = SamplingConfig(mode="2d", axis=axis, shape=(16, 16))
        stack = stack_samples(volume, sampling)
        assert stack.shape[0] == volume.shape[axis]
        np.testing.assert_array_equal(stack[1], np.take(volume, 1, axis=axis))
        np.testing.assert_array_equal(unstack_samples(stack, sampling), volume)
    whole = SamplingConfig(mode="3d", shape=(16, 16, 16))
    np.testing.assert_array_equal(unstack_samples(stack_samples(volume, whole), whole), volume)
