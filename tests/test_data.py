"""Cube -> tf.data: grouped folds never leak, validation on originals, readers, order, sharding, augmentation."""

from __future__ import annotations

import threading

import h5py
import numpy as np
import pytest
import tensorflow as tf

from spine_keras.augment import AugmentConfig
from spine_keras.data import (
    CubeReader,
    Split,
    case_folds,
    check_no_leak,
    make_splits,
    open_cube,
    train_dataset,
    val_dataset,
)
from spine_keras.errors import UserError


@pytest.fixture(scope="module")
def cube_path(tmp_path_factory, make_training_cube):
    # 5 cases of 2 originals each, plus one augmented copy of every original: 20 samples
    path = tmp_path_factory.mktemp("data") / "cube.h5"
    return make_training_cube(path, (16, 16), cases=5, per_case=2, copies=1)


def test_open_cube(cube_path):
    cube = open_cube(cube_path)
    assert cube.mode == "2d" and cube.input_shape == (16, 16, 1) and cube.n_classes == 3
    assert len(cube.case_ids) == 20 and int((cube.augmented == 0).sum()) == 10


def test_folds_group_cases_and_never_leak(cube_path):
    cube = open_cube(cube_path)
    folds = case_folds(cube.case_ids, 3, seed=1)
    assert sorted(c for f in folds for c in f) == sorted(set(cube.case_ids)) and all(folds)
    assert case_folds(cube.case_ids, 3, seed=1) == folds
    splits = make_splits(cube, 3, "all", 0.2, seed=1)
    assert [s.name for s in splits] == ["fold_0", "fold_1", "fold_2"]
    seen_val = []
    for split in splits:
        train_cases, val_cases = set(cube.case_ids[split.train]), set(cube.case_ids[split.val])
        assert not train_cases & val_cases
        assert (cube.augmented[split.val] == 0).all()  # validation on originals only
        val_copies = int((np.isin(cube.case_ids, list(val_cases)) & (cube.augmented > 0)).sum())
        assert len(split.train) + len(split.val) + val_copies == 20  # train keeps its cases' copies
        seen_val += list(val_cases)
    assert sorted(seen_val) == sorted(set(cube.case_ids))  # every case validated exactly once
    leaking = Split("bad", splits[0].train, np.concatenate([splits[0].val, splits[0].train[:1]]), (), ())
    with pytest.raises(AssertionError, match="both training and validation"):
        check_no_leak(cube, leaking)


def test_single_split_and_split_errors(cube_path):
    cube = open_cube(cube_path)
    (split,) = make_splits(cube, None, "all", 0.4, seed=0)
    assert len(split.val_cases) == 2 and len(split.train_cases) == 3
    assert make_splits(cube, 2, "1", 0.2, 0)[0].name == "fold_1"
    for folds, fold, fraction in ((6, "all", 0.2), (1, "all", 0.2), (2, "5", 0.2), (None, "all", 1.5)):
        with pytest.raises(UserError):
            make_splits(cube, folds, fold, fraction, 0)


def test_open_cube_rejects_cube_without_case_ids(cube_path, tmp_path):
    broken = tmp_path / "broken.h5"
    with h5py.File(cube_path) as src, h5py.File(broken, "w") as dst:
        for name in ("images", "labels", "augmented"):
            src.copy(name, dst)
        dst.attrs.update(src.attrs)
    with pytest.raises(UserError, match="case_ids"):
        open_cube(broken)


def test_reader_opens_one_handle_per_thread(cube_path):
    reader = CubeReader(cube_path)
    handles, images = {}, {}

    def work(name: str, index: int) -> None:
        images[name] = reader.read(index)[0]
        handles[name] = reader._datasets()[0]

    threads = [threading.Thread(target=work, args=(f"t{i}", i)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert handles["t0"] is not handles["t1"] and handles["t0"].id.id != handles["t1"].id.id
    assert reader._datasets()[0] is reader._datasets()[0]  # one handle per thread, reused
    with h5py.File(cube_path) as handle:
        assert np.array_equal(images["t1"], handle["images"][1])


def _indices_of(ds: tf.data.Dataset, reader: CubeReader) -> list[int]:
    """Map batches back to sample indices through their (unique) images."""
    with h5py.File(reader.path) as handle:
        every = handle["images"][()]
    found = []
    for images, _ in ds:
        for image in images.numpy():
            found.append(int(np.flatnonzero((every == image).all(axis=(1, 2, 3)))[0]))
    return found


def test_train_order_per_epoch_is_seeded_and_sharded(cube_path):
    reader, indices = CubeReader(cube_path), np.arange(20)
    one = _indices_of(train_dataset(reader, indices, 4, 4, 5, seed=3, epochs=(0, 2)), reader)
    assert sorted(one[:20]) == list(range(20)) and sorted(one[20:]) == list(range(20)) and one[:20] != one[20:]
    resumed = _indices_of(train_dataset(reader, indices, 4, 4, 5, seed=3, epochs=(1, 2)), reader)
    assert resumed == one[20:]  # a resumed run sees the same order
    shards = [
        _indices_of(train_dataset(reader, indices, 2, 4, 5, 3, (0, 1), tf.distribute.InputContext(2, i, 2)), reader)
        for i in range(2)
    ]
    assert sorted(shards[0] + shards[1]) == list(range(20)) and not set(shards[0]) & set(shards[1])


def test_val_dataset_pads_with_weight_zero(cube_path):
    reader = CubeReader(cube_path)
    ds = val_dataset(reader, np.array([0, 2, 4]), 2, 2).take(2)
    weights = np.concatenate([w.numpy() for _, _, w in ds])
    assert weights.tolist() == [1, 1, 1, 0]


def test_online_augmentation_is_reproducible(cube_path):
    strong = AugmentConfig(rotation=30, zoom=(0.8, 1.2), noise_prob=1.0, noise_std=(0.1, 0.2))
    reader = CubeReader(cube_path, strong, seed=7)
    image, label = reader.read_train(0, 5)
    again, _ = reader.read_train(0, 5)
    other, _ = reader.read_train(1, 5)
    assert image.shape == (16, 16, 1) and label.dtype == np.uint8 and set(np.unique(label)) <= {0, 1, 2}
    assert np.array_equal(image, again) and not np.array_equal(image, other)
    assert not np.array_equal(image, reader.read(5)[0])
