"""2.5D input: neighbouring slices as channels, the same in the cube, its augmented copies and prediction."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from spine_keras.augment import AugmentConfig
from spine_keras.bundle import ModelBundle
from spine_keras.cli.make_cube import main as make_cube
from spine_keras.cube import read_attrs
from spine_keras.cube.build import CubeConfig, build_cube
from spine_keras.errors import UserError
from spine_keras.io import read_volume
from spine_keras.predict.volume import model_inputs
from spine_keras.prepare import SamplingConfig, prepare, stack_inputs
from spine_keras.preprocess import PreprocessConfig


def slice_numbered(shape: tuple[int, ...], axis: int) -> np.ndarray:
    """A volume whose slice k along `axis` holds the value k everywhere."""
    index = [1, 1, 1]
    index[axis] = shape[axis]
    return np.broadcast_to(np.arange(shape[axis], dtype=np.float32).reshape(index), shape).copy()


@pytest.mark.parametrize("axis", [0, 2])
def test_channels_are_the_neighbouring_slices_with_edges_repeated(axis: int) -> None:
    volume = slice_numbered((6, 5, 7), axis)
    stack = stack_inputs(volume, SamplingConfig(mode="2d", axis=axis, shape=(16, 16), context=1))
    n = volume.shape[axis]
    assert stack.shape == (n, *np.delete(volume.shape, axis), 3)
    channels = stack[:, 0, 0, :]
    np.testing.assert_array_equal(channels[3], [2, 3, 4])
    np.testing.assert_array_equal(channels[0], [0, 0, 1])
    np.testing.assert_array_equal(channels[n - 1], [n - 2, n - 1, n - 1])
    wide = stack_inputs(volume, SamplingConfig(mode="2d", axis=axis, shape=(16, 16), context=2))[:, 0, 0, :]
    np.testing.assert_array_equal(wide[0], [0, 0, 0, 1, 2])
    np.testing.assert_array_equal(wide[n - 2], [n - 4, n - 3, n - 2, n - 1, n - 1])


def test_without_context_the_one_channel_is_the_slice() -> None:
    volume = np.random.default_rng(0).normal(size=(6, 5, 7)).astype(np.float32)
    stack = stack_inputs(volume, SamplingConfig(mode="2d", axis=2, shape=(16, 16)))
    np.testing.assert_array_equal(stack[..., 0], np.moveaxis(volume, 2, 0))
    whole = stack_inputs(volume, SamplingConfig(mode="3d", shape=(16, 16, 16)))
    assert whole.shape == (1, 6, 5, 7, 1)


@pytest.mark.parametrize("context", [-1, 17, 1.5, True])
def test_bad_context_is_refused(context) -> None:
    with pytest.raises(UserError, match="--context must be a whole number of slices from 0 to 16"):
        SamplingConfig(mode="2d", shape=(16, 16), context=context)


def test_context_is_refused_in_3d() -> None:
    with pytest.raises(UserError, match="--context .* applies only to --mode 2d"):
        SamplingConfig(mode="3d", shape=(16, 16, 16), context=1)


def test_make_cube_refuses_context_in_3d_before_writing(pair_list, tmp_path: Path, capsys) -> None:
    listing = pair_list(1)
    status = make_cube([str(listing), "-o", str(tmp_path / "c.h5"), "--mode", "3d", "--context", "1", "--quiet"])
    assert status == 2
    assert "applies only to --mode 2d" in capsys.readouterr().err
    assert not (tmp_path / "c.h5").exists()


def build(tmp_path: Path, image: Path, label: Path, name: str, preprocess, context: int, copies: int = 1) -> Path:
    """A 2D cube of one case along axis 2 with `context`, one augmented copy of every slice."""
    (tmp_path / "list.txt").write_text(f"{image.name},{label.name}\n")
    cube = tmp_path / name
    sampling = SamplingConfig(mode="2d", axis=2, shape=(32, 24), min_foreground=0.01, context=context)
    augment = AugmentConfig(rotation=10.0, noise_prob=1.0, noise_std=(0.1, 0.1))
    config = CubeConfig(str(tmp_path / "list.txt"), str(cube), preprocess, sampling, "1-2:1", None, augment, copies)
    build_cube(config, progress=False)
    return cube


def bundle_of(cube: Path) -> ModelBundle:
    """The bundle fields training takes from a cube: its sampling, and channels from its images."""
    attrs = read_attrs(cube)
    sampling = SamplingConfig.from_dict(attrs["sampling"])
    with h5py.File(cube, "r") as handle:
        channels = handle["images"].shape[-1]
    return ModelBundle(
        arch="u1",
        input_shape=(*sampling.shape, channels),
        class_names=tuple(attrs["class_names"]),
        preprocess=PreprocessConfig.from_dict(attrs["preprocess"]),
        sampling=sampling,
        label_map=attrs["label_map"],
    )


@pytest.mark.parametrize(
    "preprocess", [PreprocessConfig(spacing=(0.9, 1.3, 2.0)), PreprocessConfig(normalization="percentile", fit="pad")]
)
def test_context_cube_matches_the_plain_cube_and_prediction_inputs(make_pair, tmp_path: Path, preprocess) -> None:
    """The centre channel (originals and augmented copies) is the plain cube's image, the labels and the kept
    (foreground-filtered) slices are the same, and prediction feeds the model the cube's originals bit for bit."""
    image, label = make_pair(tmp_path, "case", shape=(30, 26, 12), spacing=(1.1, 0.8, 2.5), seed=3)
    plain = build(tmp_path, image, label, "plain.h5", preprocess, context=0)
    wide = build(tmp_path, image, label, "wide.h5", preprocess, context=1)
    with h5py.File(plain, "r") as p, h5py.File(wide, "r") as w:
        assert w["images"].shape == (*p["images"].shape[:-1], 3)
        np.testing.assert_array_equal(w["images"][..., 1:2], p["images"][()])
        np.testing.assert_array_equal(w["labels"][()], p["labels"][()])
        np.testing.assert_array_equal(w["positions"][()], p["positions"][()])
        originals = w["images"][w["augmented"][()] == 0]
        positions = w["positions"][w["augmented"][()] == 0]
        copies = w["images"][w["augmented"][()] == 1]
    assert 0 < len(positions) < 12  # the foreground filter dropped slices by the centre slice's label
    bundle = bundle_of(wide)
    inputs = model_inputs(prepare(read_volume(image), bundle.preprocess), bundle)
    assert inputs.shape[-1] == 3
    np.testing.assert_array_equal(inputs[positions], originals)
    np.testing.assert_array_equal(originals[1:, ..., 0], originals[:-1, ..., 1])  # neighbours are the next slices
    assert not np.array_equal(copies[..., 0], copies[..., 1])  # the channels stay distinct slices when augmented


@pytest.mark.slow
def test_a_model_trains_and_predicts_on_a_context_cube(make_pair, tmp_path: Path, write_bundle) -> None:
    """One training step with on-the-fly augmentation through the data pipeline, then prediction of the volume."""
    from spine_keras.data import CubeReader, open_cube, train_dataset
    from spine_keras.models import build_model
    from spine_keras.predict import load_segmenter
    from spine_keras.predict.volume import predict_volume

    image, label = make_pair(tmp_path, "case", shape=(32, 32, 12), seed=1)
    cube = build(tmp_path, image, label, "wide.h5", PreprocessConfig(fit="pad"), context=1, copies=0)
    info = open_cube(cube)
    assert info.input_shape == (32, 24, 3)
    reader = CubeReader(cube, AugmentConfig(rotation=10.0), seed=0)
    dataset = train_dataset(reader, np.arange(len(info.case_ids)), 2, 2, 1, 0, (0, 1))
    model = build_model("u1", info.input_shape, info.n_classes, filters=4, depth=2)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    history = model.fit(dataset, epochs=1, steps_per_epoch=1, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    attrs = read_attrs(cube)
    run = write_bundle(
        tmp_path / "run", model, "2d", PreprocessConfig(fit="pad"), attrs["sampling"], class_names=info.class_names
    )
    prediction = predict_volume(read_volume(image), load_segmenter(run))
    assert prediction.labels.array.shape == (32, 32, 12)
