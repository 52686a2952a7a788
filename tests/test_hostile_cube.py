"""Hostile inputs and faults for make_cube, check_cube and phantom, each run as a user would (a subprocess): exit
status, one `error:` line naming the problem, no traceback, nothing left behind, no process left running.

The table's classes follow issue #9: 1 non-finite and degenerate numbers, 3 output paths, 6 lists that lie,
7 flags and sizes, plus corrupt cubes for check_cube. Disk full (4) and process lifecycle (5) are the slow tests
at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import nrrd
import numpy as np
import pytest

from spine_keras.cube import write_cube_arrays
from spine_keras.io import Volume, write_volume

REPO = Path(__file__).resolve().parents[1]
CUBE_FLAGS = ("--quiet", "--workers", "1", "--shape", "32,32")
SLOW_CASES = ("--mode", "3d", "--shape", "64,128,128", "--augment", "60")  # about 15 s a phantom case
GOOD_HEADER = {"space": "left-posterior-superior", "space directions": np.eye(3), "space origin": [0.0, 0.0, 0.0]}


@dataclass(frozen=True)
class Case:
    """One hostile input: what to put in the folder, the command line, and the refusal expected."""

    id: str
    command: str
    args: tuple[str, ...]
    match: str
    setup: Callable[[Path], None]
    status: int = 2


# ---- builders of hostile files (all written into the test's folder before the command runs) ----


def volume_pair(folder: Path, name: str = "a", image: np.ndarray | None = None, **geometry) -> None:
    """`NAME_image.nrrd` and `NAME_label.nrrd` on one grid; `image` replaces the noisy default."""
    rng = np.random.default_rng(0)
    array = rng.normal(100, 10, (24, 20, 8)).astype(np.float32) if image is None else image
    label = np.zeros(array.shape, np.uint8)
    label[6:12, 6:12, 2:5] = 1
    geo = {"spacing": (1.0, 1.0, 1.0), "origin": (0.0, 0.0, 0.0), "direction": np.eye(3), **geometry}
    write_volume(Volume(array, **geo), folder / f"{name}_image.nrrd")
    write_volume(Volume(label, **geo), folder / f"{name}_label.nrrd")


def listing(folder: Path, *lines: str, name: str = "list.txt", prefix: bytes = b"") -> None:
    (folder / name).write_bytes(prefix + ("\n".join(lines) + "\n").encode())


def good_list(folder: Path) -> None:
    volume_pair(folder)
    listing(folder, "a_image.nrrd,a_label.nrrd")


def with_image(array_change: Callable[[np.ndarray], None]) -> Callable[[Path], None]:
    """A one-case list whose float image is changed in place by `array_change` (e.g. a NaN written into it)."""

    def setup(folder: Path) -> None:
        image = np.random.default_rng(1).normal(100, 10, (24, 20, 8)).astype(np.float32)
        array_change(image)
        volume_pair(folder, image=image)
        listing(folder, "a_image.nrrd,a_label.nrrd")

    return setup


def with_nrrd_header(**fields) -> Callable[[Path], None]:
    """A one-case list whose image is an NRRD written with hostile header fields (`space_origin=...` for
    'space origin'; `spacings` replaces the space fields), its label a clean one."""
    header = {key.replace("_", " "): value for key, value in fields.items()}
    header = header if "spacings" in header else {**GOOD_HEADER, **header}

    def setup(folder: Path) -> None:
        volume_pair(folder)
        image = np.random.default_rng(1).normal(100, 10, (24, 20, 8)).astype(np.float32)
        nrrd.write(str(folder / "a_image.nrrd"), image, header)
        listing(folder, "a_image.nrrd,a_label.nrrd")

    return setup


def with_mha_edit(old: bytes, new: bytes) -> Callable[[Path], None]:
    """A one-case list whose image is an uncompressed MHA with one header field edited by hand."""

    def setup(folder: Path) -> None:
        import SimpleITK as sitk

        volume_pair(folder)
        image = sitk.GetImageFromArray(np.ones((8, 20, 24), np.float32))
        sitk.WriteImage(image, str(folder / "a_image.mha"), False)
        data = (folder / "a_image.mha").read_bytes()
        assert old in data
        (folder / "a_image.mha").write_bytes(data.replace(old, new))
        listing(folder, "a_image.mha,a_label.nrrd")

    return setup


def with_nifti_origin(folder: Path) -> None:
    import SimpleITK as sitk

    volume_pair(folder)
    image = sitk.GetImageFromArray(np.ones((8, 20, 24), np.float32))
    image.SetOrigin([float("nan"), 0.0, 0.0])
    sitk.WriteImage(image, str(folder / "a_image.nii.gz"))
    listing(folder, "a_image.nii.gz,a_label.nrrd")


def truncated_mha(folder: Path) -> None:
    with_mha_edit(b"ElementSpacing", b"ElementSpacing")(folder)
    data = (folder / "a_image.mha").read_bytes()
    (folder / "a_image.mha").write_bytes(data[: len(data) - 500])


def cube(folder: Path, name: str = "c.h5", **attrs) -> Path:
    """A small valid 2D cube of 16x16 samples, three classes."""
    labels = np.zeros((4, 16, 16), np.uint8)
    labels[:, 4:8, 4:8] = 1
    labels[0, 0, :4] = 2
    images = np.random.default_rng(0).normal(0, 1, (4, 16, 16)).astype(np.float32)
    return write_cube_arrays(folder / name, images, labels, ["a", "a", "b", "b"], **attrs)


def edited_cube(edit: Callable[[h5py.File], None]) -> Callable[[Path], None]:
    """A valid cube then `edit` applied to it in place (r+)."""

    def setup(folder: Path) -> None:
        with h5py.File(cube(folder), "r+") as handle:
            edit(handle)

    return setup


def set_attr(key: str, value) -> Callable[[h5py.File], None]:
    def edit(handle: h5py.File) -> None:
        handle.attrs[key] = value

    return edit


def replace_dataset(name: str, dtype: str) -> Callable[[h5py.File], None]:
    def edit(handle: h5py.File) -> None:
        data = handle[name][()]
        del handle[name]
        handle.create_dataset(name, data=data.astype(dtype) if data.dtype.kind != "O" else np.arange(len(data)))

    return edit


def poke(name: str, index: tuple, value) -> Callable[[h5py.File], None]:
    def edit(handle: h5py.File) -> None:
        handle[name][index] = value

    return edit


def group_for_images(handle: h5py.File) -> None:
    del handle["images"]
    handle.create_group("images")


def corrupt_chunk(folder: Path) -> None:
    """A cube whose first image chunk is overwritten with garbage (gzip then fails to inflate it)."""
    path = cube(folder)
    with h5py.File(path, "r") as handle:
        offset, size = handle["images"].id.get_chunk_info(0).byte_offset, handle["images"].id.get_chunk_info(0).size
    with open(path, "r+b") as raw:
        raw.seek(offset)
        raw.write(b"\xde\xad\xbe\xef" * (size // 4))


def symlinked_twice(folder: Path) -> None:
    good_list(folder)
    (folder / "b_image.nrrd").symlink_to(folder / "a_image.nrrd")
    listing(folder, "a_image.nrrd,a_label.nrrd", "b_image.nrrd,a_label.nrrd")


def folder_named(name: str, setup: Callable[[Path], None] = good_list) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        setup(folder)
        (folder / name).mkdir()

    return make


def file_named(name: str, setup: Callable[[Path], None] = good_list) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        setup(folder)
        (folder / name).write_text("not a folder")

    return make


def nan_at_first(image: np.ndarray) -> None:
    image[0, 0, 0] = np.nan


def inf_inside(image: np.ndarray) -> None:
    image[3, 4, 5] = np.inf


def huge_values(image: np.ndarray) -> None:
    image[...] = 3e38


def same_line_twice(folder: Path) -> None:
    good_list(folder)
    listing(folder, "a_image.nrrd,a_label.nrrd", "a_image.nrrd , a_label.nrrd")


def same_file_other_spelling(folder: Path) -> None:
    good_list(folder)
    (folder / "sub").mkdir()
    listing(folder, "a_image.nrrd,a_label.nrrd", "# again", "sub/../a_image.nrrd,a_label.nrrd")


def list_not_utf8(folder: Path) -> None:
    good_list(folder)
    listing(folder, "a_image.nrrd,a_label.nrrd", prefix=b"\xff\xfe\xe9")


def unreadable_image(folder: Path) -> None:
    """A one-case list whose image is text, not a volume."""
    good_list(folder)
    (folder / "a_image.nrrd").write_text("not a volume")


def nothing(folder: Path) -> None:
    """No files at all."""


def make_cube(case_id: str, match: str, *args: str, setup: Callable[[Path], None] = good_list) -> Case:
    return Case(case_id, "make_cube", ("list.txt", *CUBE_FLAGS, *args), match, setup)


def check_cube(case_id: str, match: str, *args: str, setup: Callable[[Path], None] = cube, status: int = 2) -> Case:
    return Case(case_id, "check_cube", args or ("c.h5",), match, setup, status)


def phantom(case_id: str, match: str, *args: str, setup: Callable[[Path], None] = nothing) -> Case:
    return Case(case_id, "phantom", args, match, setup)


INVALID = 1  # check_cube's status for a cube it read and found wrong

CASES = [
    # 1. non-finite and degenerate numbers: intensities (prepare), headers (read_volume), cubes (check_cube)
    make_cube(
        "nan-intensity",
        r"line 1: image .*a_image.nrrd.*NaN or infinite.*voxel \(0, 0, 0\)",
        setup=with_image(nan_at_first),
    ),
    make_cube("inf-intensity", r"line 1: .*1 NaN or infinite intensity", setup=with_image(inf_inside)),
    make_cube("overflowing-intensity", r"too large to normalize", setup=with_image(huge_values)),
    make_cube(
        "nrrd-zero-spacing",
        r"a_image.nrrd' has spacing \(1, 0, 1\)",
        setup=with_nrrd_header(space_directions=np.diag([1.0, 0.0, 1.0])),
    ),
    make_cube(
        "nrrd-negative-spacings",
        r"spacing \(1, -2, 1\).*positive finite",
        setup=with_nrrd_header(spacings=[1.0, -2.0, 1.0]),
    ),
    make_cube("nrrd-infinite-spacings", r"spacing \(1, inf, 1\)", setup=with_nrrd_header(spacings=[1.0, np.inf, 1.0])),
    make_cube(
        "nrrd-singular-direction",
        r"singular direction",
        setup=with_nrrd_header(space_directions=np.array([[1.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0]])),
    ),
    make_cube(
        "nrrd-nan-origin", r"non-finite origin \(nan, 0, 0\)", setup=with_nrrd_header(space_origin=[np.nan, 0.0, 0.0])
    ),
    make_cube(
        "mha-zero-spacing",
        r"a_image.mha.*Zero-valued spacing",
        setup=with_mha_edit(b"ElementSpacing = 1 1 1", b"ElementSpacing = 1 0 1"),
    ),
    make_cube(
        "mha-nan-direction",
        r"a_image.mha.*determinant is 0",
        setup=with_mha_edit(b"TransformMatrix = 1 0 0 0 1 0 0 0 1", b"TransformMatrix = nan 0 0 0 1 0 0 0 1"),
    ),
    make_cube("nifti-nan-origin", r"a_image.nii.gz' has a non-finite origin", setup=with_nifti_origin),
    make_cube("resampled-grid-too-large", r"would make a 24000x20000x8000 grid", "--spacing", "0.001,0.001,0.001"),
    check_cube(
        "labels-reach-n-classes",
        r"invalid: .*ids >= n_classes \(3\)",
        setup=edited_cube(poke("labels", (1, 0, 0), 7)),
        status=INVALID,
    ),
    check_cube(
        "nan-in-cube",
        r"invalid: 1 image values are NaN",
        setup=edited_cube(poke("images", (2, 3, 3, 0), np.nan)),
        status=INVALID,
    ),
    check_cube(
        "inf-in-cube",
        r"invalid: 1 image values are NaN or infinite",
        setup=edited_cube(poke("images", (0, 0, 0, 0), -np.inf)),
        status=INVALID,
    ),
    # corrupt cubes: the cheap checks (attributes, dtypes, layout) and the scan (chunks)
    check_cube("n-classes-one", r"n_classes is 1", setup=edited_cube(set_attr("n_classes", 1)), status=INVALID),
    check_cube(
        "n-classes-text", r"n_classes is 'three'", setup=edited_cube(set_attr("n_classes", "three")), status=INVALID
    ),
    check_cube("mode-4d", r"mode is '4d'", setup=edited_cube(set_attr("mode", "4d")), status=INVALID),
    check_cube(
        "class-names-short",
        r"2 class names for 3 classes",
        setup=edited_cube(set_attr("class_names", '["bg", "x"]')),
        status=INVALID,
    ),
    check_cube(
        "sampling-not-json",
        r"attribute 'sampling' is not valid JSON",
        setup=edited_cube(set_attr("sampling", "{shape: oops")),
    ),
    check_cube(
        "sampling-shape-differs",
        r"sampling has shape \[64, 64\]",
        setup=edited_cube(set_attr("sampling", '{"mode": "2d", "shape": [64, 64]}')),
        status=INVALID,
    ),
    check_cube(
        "preprocess-invalid",
        r"attribute preprocess is invalid: unknown normalization",
        setup=edited_cube(set_attr("preprocess", '{"normalization": "bogus"}')),
        status=INVALID,
    ),
    check_cube(
        "images-float64",
        r"images are float64, expected float32",
        setup=edited_cube(replace_dataset("images", "float64")),
        status=INVALID,
    ),
    check_cube(
        "labels-float32",
        r"labels are float32, expected uint8",
        setup=edited_cube(replace_dataset("labels", "float32")),
        status=INVALID,
    ),
    check_cube(
        "case-ids-numbers",
        r"case_ids are int64, expected strings",
        setup=edited_cube(replace_dataset("case_ids", "int64")),
        status=INVALID,
    ),
    check_cube("images-a-group", r"'images' is not a dataset", setup=edited_cube(group_for_images), status=INVALID),
    check_cube("corrupt-chunk", r"cannot read the samples .*truncated or corrupt", setup=corrupt_chunk, status=INVALID),
    check_cube("cube-is-a-folder", r"cube 'c.h5' is a folder", setup=folder_named("c.h5", nothing)),
    # 3. output paths, checked before any work
    make_cube("output-exists", r"cube 'cube.h5' already exists; pass --force", setup=file_named("cube.h5")),
    make_cube("output-is-a-folder", r"cube 'out' is a folder", "-o", "out", "--force", setup=folder_named("out")),
    make_cube("output-folder-missing", r"folder 'nowhere' does not exist", "-o", "nowhere/cube.h5"),
    make_cube(
        "output-under-a-file",
        r"'blocker' is a file, not a folder",
        "-o",
        "blocker/cube.h5",
        setup=file_named("blocker"),
    ),
    make_cube("output-is-the-list", r"is the input list itself", "-o", "list.txt", "--force"),
    make_cube("output-is-an-input", r"is an input volume of .*line 1", "-o", "a_label.nrrd", "--force"),
    check_cube(
        "png-is-a-folder", r"montage 'm.png' is a folder", "c.h5", "--png", "m.png", setup=folder_named("m.png", cube)
    ),
    check_cube("png-folder-missing", r"folder 'nowhere' does not exist", "c.h5", "--png", "nowhere/m.png"),
    check_cube("png-not-png", r"--png 'm.txt' must name a .png file", "c.h5", "--png", "m.txt"),
    phantom("out-is-a-file", r"phantom folder 'demo' is a file", "--out", "demo", setup=file_named("demo", nothing)),
    phantom(
        "list-is-a-folder", r"phantom list 'l.txt' is a folder", "--list", "l.txt", setup=folder_named("l.txt", nothing)
    ),
    phantom(
        "list-under-a-file",
        r"'blocker' is a file, not a folder",
        "--list",
        "blocker/sub/l.txt",
        setup=file_named("blocker", nothing),
    ),
    # 6. lists that lie
    make_cube("same-line-twice", r"line 2: image .*a_image.nrrd' is already listed on line 1", setup=same_line_twice),
    make_cube("same-file-other-spelling", r"line 3: .*already listed on line 1", setup=same_file_other_spelling),
    make_cube(
        "same-file-through-a-link", r"line 2: image .*b_image.nrrd' is already listed on line 1", setup=symlinked_twice
    ),
    make_cube("list-not-utf8", r"cannot read list file 'list.txt' as UTF-8", setup=list_not_utf8),
    make_cube("input-list-is-a-folder", r"list file 'list.txt' is a folder", setup=folder_named("list.txt", nothing)),
    make_cube(
        "multi-line-itk-message", r"cannot read .*a_image.mha.*data not read completely.*corrupt", setup=truncated_mha
    ),
    # 7. flags and sizes
    make_cube("workers-negative", r"argument --workers: -3 is out of range: must be in \[0, 256\]", "--workers", "-3"),
    make_cube("workers-absurd", r"argument --workers: 100000 is out of range", "--workers", "100000"),
    make_cube(
        "augment-negative", r"argument --augment: -1 is out of range: must be in \[0, 32767\]", "--augment", "-1"
    ),
    make_cube("augment-beyond-int16", r"argument --augment: 40000 is out of range", "--augment", "40000"),
    make_cube("seed-negative", r"argument --seed: -1 is out of range: must be in \[0, ", "--seed", "-1"),
    make_cube("workers-not-a-number", r"argument --workers: 'many' is not an integer", "--workers", "many"),
    make_cube(
        "shape-absurd", r"a 4096x4096x4096 float32 sample is 256 GiB", "--mode", "3d", "--shape", "4096,4096,4096"
    ),
    make_cube("shape-2d-absurd", r"a 100000x100000 float32 sample is 37.3 GiB", "--shape", "100000,100000"),
    make_cube("shape-too-small", r"target shape 8,8 is too small", "--shape", "8,8"),
    make_cube("shape-wrong-rank", r"--shape needs 3 sides for --mode 3d", "--mode", "3d", "--shape", "64,64"),
    make_cube("spacing-zero", r"spacing 0,1,1 must be positive finite mm", "--spacing", "0,1,1"),
    make_cube("spacing-nan", r"spacing nan,1,1 must be positive finite", "--spacing", "nan,1,1"),
    make_cube("spacing-two-values", r"--spacing takes three numbers", "--spacing", "1,1"),
    make_cube(
        "percentiles-reversed",
        r"percentiles 99.0,1.0 must satisfy",
        "--normalization",
        "percentile",
        "--percentiles",
        "99,1",
    ),
    make_cube("percentiles-one", r"--percentiles takes two numbers", "--percentiles", "50"),
    make_cube(
        "min-foreground-above-one",
        r"argument --min-foreground: 1.5 is out of range: must be in \[0, 1\)",
        "--min-foreground",
        "1.5",
    ),
    make_cube(
        "background-keep-negative",
        r"argument --background-keep: -0.1 is out of range: must be in \[0, 1\]",
        "--background-keep",
        "-0.1",
    ),
    make_cube(
        "stride-zero",
        r"--stride takes three positive sides",
        "--mode",
        "3d",
        "--shape",
        "16,16,16",
        "--stride",
        "0,16,16",
    ),
    make_cube("axis-out-of-range", r"argument --axis: 5 is out of range: must be in \[0, 2\]", "--axis", "5"),
    make_cube(
        "crop-roi-negative",
        r"argument --crop-roi: -1 is out of range: must be >= 0",
        "--fit",
        "pad",
        "--crop-roi",
        "-1",
    ),
    make_cube("crop-roi-nan", r"argument --crop-roi: nan is out of range", "--fit", "pad", "--crop-roi", "nan"),
    make_cube("rotation-beyond-180", r"rotation must be in \[0, 180\], got 500", "--augment", "1", "--rotation", "500"),
    make_cube("zoom-zero", r"zoom must satisfy 0 < low", "--augment", "1", "--zoom", "0,1"),
    # issue 11 flags: 2.5D context, the planner, the body crop, the ignore label, the MRI augmentations
    make_cube("context-negative", r"argument --context: -1 is out of range: must be in \[0, 16\]", "--context", "-1"),
    make_cube("context-beyond-limit", r"argument --context: 1000 is out of range", "--context", "1000"),
    make_cube(
        "context-in-3d",
        r"--context .* applies only to --mode 2d",
        *("--context", "2", "--mode", "3d", "--shape", "16,16,16"),
    ),
    make_cube(
        "shape-auto-empty-list",
        r"list file 'list.txt' has no 'image,label' lines",
        "--shape",
        "auto",
        setup=lambda folder: listing(folder, "# nothing"),
    ),
    make_cube(
        "shape-auto-unreadable",
        r"cannot read the header of .*a_image.nrrd' to plan the shape",
        "--shape",
        "auto",
        setup=unreadable_image,
    ),
    make_cube(
        "shape-auto-nothing-readable",
        r"no volume of the list has a readable header",
        "--shape",
        "auto",
        "--skip-bad",
        setup=unreadable_image,
    ),
    make_cube(
        "shape-auto-output-exists", r"cube 'cube.h5' already exists", "--shape", "auto", setup=file_named("cube.h5")
    ),
    make_cube(
        "memory-budget-zero",
        r"--memory-budget must be a positive number of GB",
        "--shape",
        "auto",
        "--memory-budget",
        "0",
    ),
    make_cube("memory-budget-nan", r"argument --memory-budget: nan is out of range", "--memory-budget", "nan"),
    make_cube("memory-budget-negative", r"argument --memory-budget: -1 is out of range", "--memory-budget", "-1"),
    make_cube(
        "memory-budget-too-small",
        r"--memory-budget 1e-09 GB cannot hold even a 16\^3 patch",
        "--mode",
        "3d",
        "--shape",
        "auto",
        "--memory-budget",
        "1e-9",
    ),
    make_cube("auto-crop-nan", r"argument --auto-crop: nan is out of range", "--auto-crop", "nan"),
    make_cube("auto-crop-negative", r"argument --auto-crop: -5 is out of range", "--auto-crop", "-5"),
    make_cube("auto-crop-inf", r"argument --auto-crop: inf is out of range", "--auto-crop", "inf"),
    make_cube(
        "auto-crop-and-crop-roi",
        r"--auto-crop and --crop-roi both crop the volume; choose one",
        "--auto-crop",
        "5",
        "--crop-roi",
        "5",
        "--fit",
        "pad",
    ),
    make_cube("label-map-id-twice", r"--label-map '1:ignore,1:2' maps id 1 twice", "--label-map", "1:ignore,1:2"),
    make_cube("label-map-overlapping", r"maps id 3 twice", "--label-map", "1-5:1,3:2"),
    make_cube("label-map-two-stars", r"has 2 '\*' rules; keep one", "--label-map", "*:0,*:1"),
    make_cube("label-map-all-ignored", r"'\*:ignore' maps no id to a class above 0", "--label-map", "*:ignore"),
    make_cube("gamma-reversed", r"gamma must satisfy 0 < low <= high, got 2,1", "--augment", "1", "--gamma", "2,1"),
    make_cube(
        "elastic-alpha-nan",
        r"elastic_alpha must satisfy 0 <= low <= high, got nan,1",
        "--augment",
        "1",
        "--elastic-alpha",
        "nan,1",
    ),
    make_cube(
        "bias-order-fraction", r"bias_order must be a whole number, got 2.5", "--augment", "1", "--bias-order", "2.5"
    ),
    make_cube("bias-order-inf", r"bias_order must be in \[0, 6\], got inf", "--augment", "1", "--bias-order", "inf"),
    make_cube(
        "lowres-factor-below-one",
        r"lowres_factor must satisfy 1 <= low <= high, got 0.5,1",
        "--augment",
        "1",
        "--lowres-factor",
        "0.5,1",
    ),
    make_cube(
        "lowres-axes-absent", r"lowres_axes \(2,\) out of range for 2D samples", "--augment", "1", "--lowres-axes", "2"
    ),
    make_cube(
        "flip-axes-absent", r"flip_axes \(5,\) out of range for 2D samples", "--augment", "1", "--flip-axes", "5"
    ),
    make_cube(
        "bool-flag-word", r"argument --lowres-one-axis: 'maybe' is not true or false", "--lowres-one-axis", "maybe"
    ),
    check_cube("rows-zero", r"argument --rows: 0 is out of range: must be in \[1, 64\]", "c.h5", "--rows", "0"),
    check_cube("rows-absurd", r"argument --rows: 100000 is out of range", "c.h5", "--rows", "100000"),
    check_cube("montage-seed-negative", r"argument --seed: -1 is out of range: must be >= 0", "c.h5", "--seed", "-1"),
    phantom("cases-zero", r"argument --cases: 0 is out of range: must be in \[1, 1000\]", "--cases", "0"),
    phantom("cases-negative", r"argument --cases: -5 is out of range", "--cases", "-5"),
    phantom("cases-absurd", r"argument --cases: 1000000 is out of range", "--cases", "1000000"),
    phantom(
        "phantom-seed-negative", r"argument --seed: -1 is out of range: must be in \[0, 4294967295\]", "--seed", "-1"
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_input_is_refused(case: Case, refusal, tmp_path: Path) -> None:
    case.setup(tmp_path)
    refusal.check(case.command, *case.args, match=case.match, status=case.status)


def test_the_table_is_large_and_distinct() -> None:
    assert len({case.id for case in CASES}) == len(CASES) >= 45
    assert {case.command for case in CASES} == {"make_cube", "check_cube", "phantom"}


def test_a_byte_order_mark_is_accepted(refusal, tmp_path: Path) -> None:
    """A list saved by an editor with a UTF-8 BOM reads like any other (the first path keeps its name)."""
    volume_pair(tmp_path)
    listing(tmp_path, "a_image.nrrd,a_label.nrrd", prefix=b"\xef\xbb\xbf")
    result = refusal.run("make_cube", "list.txt", *CUBE_FLAGS)
    assert result.returncode == 0, result.stderr
    with h5py.File(tmp_path / "cube.h5") as handle:
        assert set(handle["case_ids"].asstr()[:]) == {"a"}


# ---- 4. disk full (a real 2 MiB tmpfs where this machine lets us mount one) ----


@pytest.fixture
def full_disk(tmp_path: Path):
    """A 2 MiB tmpfs mounted at tmp_path/small (root only); skipped where mounting is not permitted."""
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], capture_output=True)
    if mounted.returncode != 0:
        small.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield small
    subprocess.run(["umount", str(small)], check=True)


def phantom_list(folder: Path, cases: int) -> None:
    from spine_keras.phantom import write_demo

    write_demo(folder / "data", folder / "list.txt", cases=cases, shape=(96, 80, 24))


@pytest.mark.slow
def test_make_cube_on_a_full_disk(full_disk: Path, refusal, tmp_path: Path) -> None:
    phantom_list(tmp_path, 2)
    args = ("list.txt", "-o", "small/cube.h5", "--quiet", "--workers", "1", "--shape", "96,96", "--augment", "3")
    refusal.check("make_cube", *args, match=r"cannot write cube 'small/cube.h5': no space left on the device")


@pytest.mark.slow
def test_phantom_on_a_full_disk_keeps_nothing(full_disk: Path, refusal) -> None:
    refusal.check(
        "phantom",
        "--out",
        "small/new/data",
        "--list",
        "small/new/l.txt",
        "--cases",
        "4",
        match=r"cannot write phantom file 'small/new/data/phantom_\d\d_\w+.nrrd': no space left",
    )


# ---- 5. process lifecycle and concurrency ----


def start_build(folder: Path, token: str, *flags: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "SPINE_KERAS_TEST_TOKEN": token}
    command = [sys.executable, str(REPO / "scripts" / "make_cube.py"), "list.txt", "--quiet", *flags]
    return subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.mark.slow
def test_sigkill_takes_the_workers_down_and_the_next_build_cleans_up(tmp_path: Path) -> None:
    from conftest import processes_with

    phantom_list(tmp_path, 4)
    token = f"kill-me-{uuid.uuid4().hex}"
    build = start_build(tmp_path, token, "--workers", "2", *SLOW_CASES)
    workers = lambda: [p for p in processes_with(token) if p != build.pid]  # noqa: E731
    assert wait_for(lambda: len(workers()) >= 2 and list(tmp_path.glob(".cube.h5.*.tmp")), 60), "no workers started"
    time.sleep(3)  # the workers are now deep in their first case
    os.kill(build.pid, signal.SIGKILL)
    build.wait()
    assert wait_for(lambda: not processes_with(token), 3), f"workers outlived their build: {workers()}"
    assert list(tmp_path.glob(".cube.h5.*.tmp")), "the killed build should have left its temporary"
    again = start_build(tmp_path, uuid.uuid4().hex, "--workers", "1", "--shape", "32,32")
    assert again.wait(120) == 0, again.stderr.read().decode()
    assert (tmp_path / "cube.h5").is_file()
    assert not list(tmp_path.glob(".cube.h5.*")), "the next build should have removed the stale temporary and lock"


@pytest.mark.slow
def test_a_second_build_of_the_same_cube_is_refused(tmp_path: Path, refusal) -> None:
    phantom_list(tmp_path, 4)
    first = start_build(tmp_path, uuid.uuid4().hex, "--workers", "1", *SLOW_CASES)
    try:
        assert wait_for(lambda: list(tmp_path.glob(".cube.h5.*.tmp")), 60), "the first build did not start"
        refusal.check(
            "make_cube",
            "list.txt",
            "--quiet",
            "--force",
            match=rf"cube 'cube.h5' is being written by process {first.pid}",
        )
        assert first.poll() is None, "the first build should still be running, so the refusal was the lock's"
    finally:
        first.kill()
        first.wait()
