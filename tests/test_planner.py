"""The planner: sample shapes from the list's median geometry (headers only), and `make_cube --shape auto`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spine_keras.cli.make_cube import main as make_cube
from spine_keras.cube import read_attrs
from spine_keras.errors import UserError
from spine_keras.io import Volume, write_volume
from spine_keras.planner import BATCH, BYTES_PER_VOXEL, Plan, median_geometry, plan_3d, plan_list, read_geometry


def write_image(folder: Path, name: str, shape: tuple[int, ...], spacing=(1.0, 1.0, 1.0)) -> Path:
    """An empty image of `shape` (its header is all the planner reads)."""
    path = folder / f"{name}.nrrd"
    write_volume(Volume(np.zeros(shape, np.uint8), spacing, (0.0, 0.0, 0.0), np.eye(3)), path)
    return path


def write_list(folder: Path, shapes: list[tuple[int, ...]], spacing=(1.0, 1.0, 1.0)) -> Path:
    """A list of images of `shapes`, each image its own label (the planner reads only the images)."""
    lines = []
    for i, shape in enumerate(shapes):
        image = write_image(folder, f"case{i}", shape, spacing)
        lines.append(f"{image.name},{image.name}")
    path = folder / "list.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_header_gives_size_and_spacing_in_array_order(tmp_path: Path) -> None:
    path = write_image(tmp_path, "a", (30, 20, 10), spacing=(0.5, 1.0, 3.0))
    assert read_geometry(path) == ((30, 20, 10), (0.5, 1.0, 3.0))


def test_2d_shape_is_the_median_slice_rounded_up_to_32(tmp_path: Path) -> None:
    """Median of 224x220 and smaller slices: 224x224 at native resolution, padded, never resized."""
    listing = write_list(tmp_path, [(224, 220, 12), (224, 220, 10), (200, 180, 14)])
    plan = plan_list(listing, "2d", axis=2)
    assert plan.median_size == (224, 220, 12)
    assert plan.shape == (224, 224)
    assert plan.fit == "pad" and plan.stride is None and plan.cases == 3
    assert plan_list(listing, "2d", axis=0).shape == (224, 32)


def test_median_geometry_is_taken_after_the_target_spacing() -> None:
    geometries = [((100, 50, 20), (1.0, 1.0, 3.0)), ((120, 60, 20), (1.0, 1.0, 3.0)), ((80, 40, 10), (2.0, 2.0, 6.0))]
    assert median_geometry(geometries) == ((100, 50, 20), (1.0, 1.0, 3.0))
    assert median_geometry(geometries, (2.0, 2.0, 2.0)) == ((60, 30, 30), (2.0, 2.0, 2.0))


def test_3d_patch_keeps_the_aspect_within_the_budget() -> None:
    """The shared data's 224x224x77 volumes: not 64x128x128, but a patch shaped like the volume."""
    plan = plan_3d((224, 224, 77), (1.0, 1.0, 1.0), cases=15, budget_gb=2.0)
    assert plan.shape == (112, 112, 48)
    assert plan.stride == (56, 56, 24)
    assert all(side % 16 == 0 for side in plan.shape)
    assert np.prod(plan.shape) * BATCH * BYTES_PER_VOXEL <= 2 * 2**30
    ratios = np.array(plan.shape) / np.array((224, 224, 77))
    assert ratios.max() / ratios.min() < 1.6
    bigger = plan_3d((224, 224, 77), (1.0, 1.0, 1.0), cases=15, budget_gb=8.0)
    assert np.prod(bigger.shape) > 2 * np.prod(plan.shape)
    assert np.prod(bigger.shape) * BATCH * BYTES_PER_VOXEL <= 8 * 2**30


def test_3d_patch_covers_a_small_volume_whole() -> None:
    plan = plan_3d((100, 90, 40), (2.0, 2.0, 2.0), cases=1, budget_gb=2.0)
    assert plan.shape == (112, 96, 48)
    assert plan.stride == plan.shape


@pytest.mark.parametrize("budget", [0.0, 0.001, float("nan")])
def test_a_budget_too_small_is_refused(budget: float) -> None:
    with pytest.raises(UserError, match="--memory-budget"):
        plan_3d((224, 224, 77), (1.0, 1.0, 1.0), cases=1, budget_gb=budget)


def test_plan_round_trips_through_json() -> None:
    plan = plan_3d((224, 224, 77), (1.0, 1.0, 1.0), cases=15, budget_gb=2.0)
    assert Plan.from_dict(plan.to_dict()) == plan
    assert "shape 112,112,48, stride 56,56,24" in plan.summary()


def test_a_missing_image_is_named_or_skipped(tmp_path: Path) -> None:
    listing = write_list(tmp_path, [(64, 64, 8), (64, 64, 8)])
    (tmp_path / "case1.nrrd").unlink()
    with pytest.raises(UserError, match="case1.nrrd' not found"):
        plan_list(listing, "2d")
    assert plan_list(listing, "2d", skip_bad=True).cases == 1


@pytest.mark.parametrize(("mode", "shape", "stride"), [("2d", [64, 32], None), ("3d", [48, 32, 16], [48, 32, 16])])
def test_make_cube_shape_auto_records_the_plan(pair_list, tmp_path: Path, capsys, mode, shape, stride) -> None:
    """40x32x12 volumes: 2D slices 40x32 -> 64x32; a 3D patch covering the whole volume, padded."""
    listing = pair_list(2)
    cube = tmp_path / "cube.h5"
    args = [str(listing), "-o", str(cube), "--mode", mode, "--shape", "auto", "--workers", "1", "--quiet"]
    assert make_cube(args) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("plan (")]
    assert len(lines) == 1 and "median 40x32x12" in lines[0]
    attrs = read_attrs(cube)
    plan = Plan.from_dict(attrs["config"]["plan"])
    assert list(plan.shape) == shape == attrs["sampling"]["shape"]
    assert attrs["sampling"]["stride"] == stride
    assert attrs["preprocess"]["fit"] == "pad"


def test_a_cube_with_a_given_shape_records_no_plan(pair_list, tmp_path: Path) -> None:
    cube = tmp_path / "cube.h5"
    assert make_cube([str(pair_list(1)), "-o", str(cube), "--shape", "32,32", "--workers", "1", "--quiet"]) == 0
    attrs = read_attrs(cube)
    assert "plan" not in attrs["config"]
    assert attrs["preprocess"]["fit"] == "resize"


def test_study_variant_shape_auto_is_planned_from_the_training_lists(pair_list, tmp_path: Path) -> None:
    """2D: 40x32 slices -> 64x32 with the plan's pad fit; 3D: the plan's stride joins the variant's cube settings,
    a fit the study sets stays."""
    from spine_keras.study.config import StudyConfig

    listing = pair_list(2)
    data = {
        "data": {"train": [{"list": str(listing), "label_map": "1-2:1"}]},
        "classes": ["background", "vertebra"],
        "cube": {"workers": 1},
        "variants": [
            {"mode": "2d", "arch": "u1", "shape": "auto"},
            {"mode": "3d", "arch": "u1", "shape": "auto", "cube": {"fit": "resize"}, "train": {"depth": 3}},
        ],
        "folds": 2,
    }
    config = StudyConfig.from_dict(data, tmp_path / "study.yaml")
    flat, volume = config.variants
    assert flat.shape == (64, 32) and config.cube_settings(flat)["fit"] == "pad"
    assert volume.shape == (48, 32, 16)
    assert config.cube_settings(volume)["stride"] == [48, 32, 16]
    assert config.cube_settings(volume)["fit"] == "resize"
