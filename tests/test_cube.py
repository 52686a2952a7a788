"""Cube builder: layout contract, sampling, augmentation copies, determinism, and the real data."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from spine_keras.cli.make_cube import main as make_cube
from spine_keras.cube import read_attrs


def build(list_path: Path, out: Path, *flags: str) -> Path:
    assert make_cube([str(list_path), "-o", str(out), "--quiet", "--workers", "1", *flags]) == 0
    return out


def test_2d_cube_layout_and_attributes(pair_list, tmp_path: Path) -> None:
    list_path = pair_list(3)
    cube = build(
        list_path,
        tmp_path / "c.h5",
        "--shape",
        "32,32",
        "--label-map",
        "1:1,2:2",
        "--classes",
        "background,vertebra,disc",
        "--augment",
        "1",
        "--seed",
        "7",
    )
    with h5py.File(cube) as f:
        n = 3 * 12 * 2  # 3 cases x 12 slices along axis 2, each with one augmented copy
        assert f["images"].shape == (n, 32, 32, 1) and f["images"].dtype == np.float32
        assert f["labels"].shape == (n, 32, 32) and f["labels"].dtype == np.uint8
        assert f["images"].chunks == (1, 32, 32, 1) and f["labels"].chunks == (1, 32, 32)
        assert f["images"].compression == "gzip"
        case_ids = f["case_ids"].asstr()[:]
        assert list(dict.fromkeys(case_ids)) == ["case0", "case1", "case2"]
        augmented = f["augmented"][:]
        assert np.count_nonzero(augmented == 0) == 36 and np.count_nonzero(augmented == 1) == 36
        assert set(np.unique(f["labels"][:])) <= {0, 1, 2}
    attrs = read_attrs(cube)
    assert attrs["mode"] == "2d" and attrs["n_classes"] == 3
    assert attrs["class_names"] == ["background", "vertebra", "disc"]
    assert attrs["label_map"] == "1:1,2:2" and attrs["seed"] == 7
    assert attrs["augment"]["copies"] == 1 and "rotation" in attrs["augment"]
    assert attrs["normalization"]["method"] == "zscore"
    assert attrs["sampling"]["shape"] == [32, 32] and attrs["sampling"]["axis"] == 2
    assert attrs["source_list"].endswith("list.txt") and attrs["spine_keras_version"]
    assert attrs["skipped"] == []
    config = attrs["config"]  # the settings given, so that the cube can be rebuilt exactly
    given = {
        "list_path": str(list_path),
        "output": str(cube),
        "label_map": "1:1,2:2",
        "class_names": ["background", "vertebra", "disc"],
        "copies": 1,
        "seed": 7,
        "workers": 1,
    }
    assert {key: config[key] for key in given} == given
    assert config["sampling"]["mode"] == "2d" and config["sampling"]["shape"] == [32, 32]
    assert config["preprocess"]["normalization"] == "zscore"  # the default, recorded too


@pytest.mark.slow  # two worker processes
def test_same_seed_same_cube_any_worker_count(pair_list, tmp_path: Path) -> None:
    lst = pair_list(3)
    flags = ("--shape", "32,32", "--augment", "2", "--seed", "3")
    a = build(lst, tmp_path / "a.h5", *flags)
    assert make_cube([str(lst), "-o", str(tmp_path / "b.h5"), "--quiet", "--workers", "2", *flags]) == 0
    c = build(lst, tmp_path / "c.h5", "--shape", "32,32", "--augment", "2", "--seed", "4")
    with h5py.File(a) as fa, h5py.File(tmp_path / "b.h5") as fb, h5py.File(c) as fc:
        np.testing.assert_array_equal(fa["images"][:], fb["images"][:])
        np.testing.assert_array_equal(fa["labels"][:], fb["labels"][:])
        assert not np.array_equal(fa["images"][fa["augmented"][:] > 0], fc["images"][fc["augmented"][:] > 0])
        originals = fa["augmented"][:] == 0
        np.testing.assert_array_equal(fa["images"][originals], fc["images"][originals])


def test_min_foreground_drops_empty_slices(pair_list, tmp_path: Path) -> None:
    cube = build(pair_list(1), tmp_path / "c.h5", "--shape", "32,32", "--min-foreground", "0.01")
    with h5py.File(cube) as f:
        labels = f["labels"][:]
        positions = f["positions"][:]
    assert 0 < len(labels) < 12
    assert all((lab > 0).mean() >= 0.01 for lab in labels)
    assert positions.tolist() == sorted(positions.tolist())


def test_3d_whole_volume_and_patches(pair_list, tmp_path: Path) -> None:
    lst = pair_list(2)
    whole = build(lst, tmp_path / "w.h5", "--mode", "3d", "--shape", "16,32,16")
    with h5py.File(whole) as f:
        assert f["images"].shape == (2, 16, 32, 16, 1) and f["labels"].shape == (2, 16, 32, 16)
    patches = build(
        lst, tmp_path / "p.h5", "--mode", "3d", "--shape", "16,16,16", "--stride", "16,16,16", "--background-keep", "0"
    )
    with h5py.File(patches) as f:
        labels = f["labels"][:]
        assert f["images"].shape[1:] == (16, 16, 16, 1)
        assert all(lab.any() for lab in labels)  # foreground-biased: empty patches dropped at keep 0
    assert read_attrs(patches)["sampling"]["stride"] == [16, 16, 16]


def test_resample_and_roi_crop(pair_list, tmp_path: Path) -> None:
    cube = build(
        pair_list(1, spacing=(0.5, 0.5, 1.0)),
        tmp_path / "c.h5",
        "--shape",
        "16,16",
        "--spacing",
        "1,1,1",
        "--crop-roi",
        "2",
        "--fit",
        "pad",
    )
    attrs = read_attrs(cube)
    assert attrs["spacing"] == [1.0, 1.0, 1.0] and attrs["preprocess"]["crop_roi_mm"] == 2
    with h5py.File(cube) as f:
        # the label boxes cover slices 3..6 along axis 2 (1 mm), plus 2 mm margins: 4 + 2 * 2 = 8 slices
        assert f["labels"].shape[0] == 8


@pytest.mark.realdata
def test_real_mri_2d_and_3d(shared_mri: Path, tmp_path: Path) -> None:
    good = [line for line in (shared_mri / "lists" / "vb2.txt").read_text().splitlines() if "VB2_0" in line][2:4]
    lst = tmp_path / "vb2_two.txt"
    lst.write_text(
        "\n".join(",".join(str((shared_mri / "lists" / p.strip()).resolve()) for p in line.split(",")) for line in good)
        + "\n"
    )
    cube2d = build(
        lst,
        tmp_path / "r2.h5",
        "--shape",
        "128,128",
        "--label-map",
        "1-7:1",
        "--classes",
        "background,vertebra",
        "--min-foreground",
        "0.001",
    )
    with h5py.File(cube2d) as f:
        assert f["images"].shape[1:] == (128, 128, 1)
        assert 20 < f["images"].shape[0] <= 2 * 77
        assert set(np.unique(f["labels"][:])) == {0, 1}
        assert abs(float(f["images"][:].mean())) < 1.0
    cube3d = build(
        lst, tmp_path / "r3.h5", "--mode", "3d", "--shape", "32,64,64", "--label-map", "1-7:1", "--spacing", "2,2,2"
    )
    with h5py.File(cube3d) as f:
        assert f["images"].shape == (2, 32, 64, 64, 1)
        assert f["labels"][:].max() == 1


def test_augment_flags_reach_the_cube(pair_list, tmp_path: Path) -> None:
    cube = build(
        pair_list(1),
        tmp_path / "c.h5",
        "--shape",
        "32,32",
        "--augment",
        "1",
        "--rotation",
        "5",
        "--zoom",
        "0.9,1.1",
        "--flip-prob",
        "0",
    )
    augment = read_attrs(cube)["augment"]
    assert augment["rotation"] == 5.0 and list(augment["zoom"]) == [0.9, 1.1] and augment["flip_prob"] == 0.0
    assert make_cube([str(pair_list(1)), "-o", str(tmp_path / "d.h5"), "--zoom", "2,1"]) == 2
