"""Hostile inputs to spine-predict, spine-export, spine-models and spine-instances: each is refused cleanly (exit 2,
one `error:` line naming what is wrong, no traceback, nothing left behind), most of them before TensorFlow is imported.

Classes of issue #9 covered here: 1 non-finite inputs, 3 output paths, 4 full disk, 7 flags, 8 untrusted model
files (SavedModel op allow-list, exported-file hashes, safe mode), 9 edited metadata.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from spine_keras.io import Volume, write_volume

CLASSES = ["background", "vertebra", "disc"]
RUN = "run"  # a 2D run folder (constant model, 16x16 slices) copied into every case's folder
EXPORT = "run/export"


@pytest.fixture(scope="module")
def templates(tmp_path_factory, write_bundle, constant_model) -> Path:
    """A run folder with its export, and two k-fold runs (agreeing, disagreeing), built once for the module."""
    from spine_keras.export import export_bundle

    root = tmp_path_factory.mktemp("templates")
    write_bundle(root / RUN, constant_model((16, 16, 1), [0.0, 1.0, 0.5]), "2d")
    export_bundle(root / RUN)
    for fold, side in enumerate((16, 32)):
        write_bundle(root / "mixed" / f"fold_{fold}", constant_model((side, side, 1), [0.0, 1.0, 0.5]), "2d")
    return root


class Case:
    """A case folder being set up: files are copied or written into it before the command runs."""

    def __init__(self, folder: Path, templates: Path, request: pytest.FixtureRequest):
        self.folder, self.templates, self.request = folder, templates, request

    def copy(self, name: str, to: str | None = None) -> Path:
        target = self.folder / (to or name)
        shutil.copytree(self.templates / name, target)
        return target

    def scan(self, name: str = "scan.nrrd", shape=(20, 18, 6), spacing=(1.0, 1.0, 1.0), value=None) -> Path:
        array = np.random.default_rng(0).normal(100, 10, shape).astype(np.float32)
        if value is not None:
            array[3, 4, 2] = value
        write_volume(Volume(array, spacing, (0.0, 0.0, 0.0), np.eye(len(shape))), self.folder / name)
        return self.folder / name

    def edit_json(self, path: str, edit: Callable[[dict], object]) -> None:
        file = self.folder / path
        data = json.loads(file.read_text())
        edit(data)
        file.write_text(json.dumps(data))

    def readonly(self, name: str) -> Path:
        """A folder nobody may write into: chmod for a normal user, a read-only tmpfs for root (skipped if the
        machine does not allow mounting)."""
        folder = self.folder / name
        folder.mkdir()
        if os.geteuid() != 0:
            folder.chmod(0o555)
            self.request.addfinalizer(lambda: folder.chmod(0o755))
            return folder
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], check=False)
        if mounted.returncode != 0:
            pytest.skip("cannot make a read-only folder as root here (mount not permitted)")
        self.request.addfinalizer(lambda: subprocess.run(["umount", str(folder)], check=False))
        return folder


def flip_byte(path: Path, offset: int = 10) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0xFF
    path.write_bytes(bytes(data))


def nrrd_with_spacing(case: Case, spacing: str) -> Path:
    """A raw NRRD whose header gives `spacing` on the first axis (written by hand: writers refuse such headers)."""
    path = case.folder / "scan.nrrd"
    header = (
        "NRRD0004\ntype: float\ndimension: 3\nsizes: 4 4 3\nspace: left-posterior-superior\n"
        f"space directions: ({spacing},0,0) (0,1,0) (0,0,1)\nspace origin: (0,0,0)\nencoding: raw\nendian: little\n\n"
    )
    path.write_bytes(header.encode() + np.ones(48, np.float32).tobytes())
    return path


def folds_flipped_differently(case: Case) -> None:
    """Two folds of one run, the first trained with flips of axis 1, the second without flips."""
    for fold, flips in enumerate(([1], [])):
        case.copy(RUN, f"ens/fold_{fold}")
        case.edit_json(f"ens/fold_{fold}/spine_keras.json", lambda data, flips=flips: data.update(train_flips=flips))


# (id, setup(case), args, expected message regex)
PREDICT = [
    ("overlap-one", lambda c: c.copy(RUN), [RUN, "scan.nrrd", "--overlap", "1"], r"--overlap.*out of range"),
    ("overlap-negative", lambda c: c.copy(RUN), [RUN, "scan.nrrd", "--overlap", "-0.1"], r"--overlap.*\[0, 1\)"),
    ("overlap-nan", lambda c: c.copy(RUN), [RUN, "scan.nrrd", "--overlap", "nan"], r"--overlap.*out of range"),
    ("batch-zero", lambda c: c.copy(RUN), [RUN, "scan.nrrd", "--batch-size", "0"], r"--batch-size.*out of range"),
    ("batch-text", lambda c: c.copy(RUN), [RUN, "scan.nrrd", "--batch-size", "x"], r"--batch-size.*not an integer"),
    ("format", lambda c: c.copy(RUN), [RUN, "scan.nrrd", "--format", "png"], r"--format.*invalid choice"),
    (
        "out-is-file",
        lambda c: (c.copy(RUN), c.scan()),
        [RUN, "scan.nrrd", "-o", "scan.nrrd"],
        r"output folder 'scan.nrrd' is a file",
    ),
    (
        "out-parent-missing",
        lambda c: (c.copy(RUN), c.scan()),
        [RUN, "scan.nrrd", "-o", "no/such/out"],
        r"folder 'no/such' does not exist",
    ),
    (
        "out-unwritable",
        lambda c: (c.copy(RUN), c.scan(), c.readonly("locked")),
        [RUN, "scan.nrrd", "-o", "locked/out"],
        r"folder 'locked' is not writable",
    ),
    ("model-missing", lambda c: c.scan(), ["nowhere", "scan.nrrd"], r"model 'nowhere' not found"),
    (
        "metadata-missing",
        lambda c: (c.copy(RUN), (c.folder / RUN / "spine_keras.json").unlink(), c.scan()),
        [RUN, "scan.nrrd"],
        r"no spine_keras.json found",
    ),
    (
        "metadata-not-json",
        lambda c: (c.copy(RUN), (c.folder / RUN / "spine_keras.json").write_text("{oops"), c.scan()),
        [RUN, "scan.nrrd"],
        r"cannot read model metadata",
    ),
    (
        "metadata-foreign",
        lambda c: (c.copy(RUN), c.edit_json(f"{RUN}/spine_keras.json", lambda d: d.update(format="x/1")), c.scan()),
        [RUN, "scan.nrrd"],
        r"not spine_keras model metadata",
    ),
    (
        "field-missing",
        lambda c: (c.copy(RUN), c.edit_json(f"{RUN}/spine_keras.json", lambda d: d.pop("class_names")), c.scan()),
        [RUN, "scan.nrrd"],
        r"field 'class_names' is missing",
    ),
    (
        "field-input-shape",
        lambda c: (c.copy(RUN), c.edit_json(f"{RUN}/spine_keras.json", lambda d: d.update(input_shape="16x16"))),
        [RUN, "scan.nrrd"],
        r"field 'input_shape' must be a list of integers",
    ),
    (
        "field-n-classes",
        lambda c: (c.copy(RUN), c.edit_json(f"{RUN}/spine_keras.json", lambda d: d.update(n_classes=7))),
        [RUN, "scan.nrrd"],
        r"field 'n_classes' is 7 but the bundle implies 3",
    ),
    (
        "field-sampling",
        lambda c: (c.copy(RUN), c.edit_json(f"{RUN}/spine_keras.json", lambda d: d["sampling"].update(mode="4d"))),
        [RUN, "scan.nrrd"],
        r"field 'sampling' must be valid",
    ),
    (
        "field-preprocess",
        lambda c: (
            c.copy(RUN),
            c.edit_json(f"{RUN}/spine_keras.json", lambda d: d["preprocess"].update(normalization="magic")),
        ),
        [RUN, "scan.nrrd"],
        r"field 'preprocess' must be valid",
    ),
    (
        "field-label-map",
        lambda c: (c.copy(RUN), c.edit_json(f"{RUN}/spine_keras.json", lambda d: d.update(label_map="1-x:y"))),
        [RUN, "scan.nrrd"],
        r"field 'label_map'",
    ),
    (
        "field-export-digest",
        lambda c: (
            c.copy(RUN),
            c.edit_json(f"{EXPORT}/spine_keras.json", lambda d: d["export"]["files"].update({"model.keras": "abc"})),
        ),
        [EXPORT, "scan.nrrd"],
        r"field 'export' must be a SHA-256 hex digest",
    ),
    (
        "field-export-path",
        lambda c: (
            c.copy(RUN),
            c.edit_json(f"{EXPORT}/spine_keras.json", lambda d: d["export"]["files"].update({"../x": "0" * 64})),
        ),
        [EXPORT, "scan.nrrd"],
        r"field 'export' must be relative paths inside the export",
    ),
    ("folds-disagree", lambda c: (c.copy("mixed"), c.scan()), ["mixed", "scan.nrrd"], r"folds of 'mixed' disagree"),
    (
        "label-count",
        lambda c: (c.copy(RUN), c.scan()),
        [RUN, "scan.nrrd", "--label", "scan.nrrd", "--label", "scan.nrrd"],
        r"--label was given 2 time\(s\) for 1 volume",
    ),
    ("input-nan", lambda c: (c.copy(RUN), c.scan(value=np.nan)), [RUN, "scan.nrrd"], r"scan.nrrd.*(NaN|non-finite)"),
    (
        "input-inf",
        lambda c: (c.copy(RUN), c.scan(value=np.inf)),
        [RUN, "scan.nrrd"],
        r"scan.nrrd.*(infinite|non-finite)",
    ),
    (
        "input-zero-spacing",
        lambda c: (c.copy(RUN), nrrd_with_spacing(c, "0")),
        [RUN, "scan.nrrd"],
        r"scan.nrrd' has spacing \(0, 1, 1\)",
    ),
    (
        "input-nan-spacing",
        lambda c: (c.copy(RUN), nrrd_with_spacing(c, "nan")),
        [RUN, "scan.nrrd"],
        r"scan.nrrd' has (spacing|a non-finite)",
    ),
    ("input-missing", lambda c: c.copy(RUN), [RUN, "gone.nrrd"], r"file 'gone.nrrd' not found"),
    (
        "input-unsupported",
        lambda c: (c.copy(RUN), (c.folder / "scan.dcm").write_bytes(b"\0")),
        [RUN, "scan.dcm"],
        r"unsupported input type",
    ),
    (
        "input-2d",
        lambda c: (c.copy(RUN), c.scan("flat.nrrd", shape=(20, 18), spacing=(1.0, 1.0))),
        [RUN, "flat.nrrd"],
        r"2 spatial dimensions",
    ),
    (
        "export-no-hashes",
        lambda c: (c.copy(RUN), c.edit_json(f"{EXPORT}/spine_keras.json", lambda d: d["export"].update(files={}))),
        [EXPORT, "scan.nrrd"],
        r"has no file hashes .*--trust-model",
    ),
    (
        "export-flipped-variable",
        lambda c: (c.copy(RUN), flip_byte(c.folder / EXPORT / "saved_model/variables/variables.data-00000-of-00001")),
        [EXPORT, "scan.nrrd"],
        r"variables.data-00000-of-00001' differs from the file exported",
    ),
    (
        "export-truncated-graph",
        lambda c: (c.copy(RUN), (c.folder / EXPORT / "saved_model/saved_model.pb").write_bytes(b"\x08")),
        [EXPORT, "scan.nrrd"],
        r"saved_model.pb' differs from the file exported",
    ),
    (
        "export-missing-index",
        lambda c: (c.copy(RUN), (c.folder / EXPORT / "saved_model/variables/variables.index").unlink()),
        [EXPORT, "scan.nrrd"],
        r"variables.index' is missing from the export",
    ),
    (
        "export-extra-file",
        lambda c: (c.copy(RUN), (c.folder / EXPORT / "saved_model/assets/payload.txt").write_text("x")),
        [EXPORT, "scan.nrrd"],
        r"payload.txt' is not part of the export",
    ),
    (
        "export-flipped-keras",
        lambda c: (c.copy(RUN), flip_byte(c.folder / EXPORT / "model.keras", 100)),
        [f"{EXPORT}/model.keras", "scan.nrrd"],
        r"model.keras' differs from the file exported",
    ),
    (
        "export-flipped-saved-model-dir",
        lambda c: (c.copy(RUN), flip_byte(c.folder / EXPORT / "saved_model/variables/variables.index")),
        [f"{EXPORT}/saved_model", "scan.nrrd", "--trust-model"],
        r"variables.index' differs from the file exported",
    ),
    ("postprocess-text", lambda c: c.copy(RUN), [RUN, "scan.nrrd", "--postprocess", "min-size:abc"], r"min-size:ML"),
    ("postprocess-negative", lambda c: c.copy(RUN), [RUN, "scan.nrrd", "--postprocess", "min-size:-1"], r">= 0"),
    ("postprocess-nan", lambda c: c.copy(RUN), [RUN, "scan.nrrd", "--postprocess", "min-size:nan"], r"not nan"),
    ("postprocess-bogus", lambda c: c.copy(RUN), [RUN, "scan.nrrd", "--postprocess", "bogus"], r"not 'bogus'"),
    ("tta-unknown", lambda c: c.copy(RUN), [RUN, "scan.nrrd", "--tta=some"], r"argument --tta: invalid choice"),
    ("tta-flips-unrecorded", lambda c: c.copy(RUN), [RUN, "scan.nrrd", "--tta"], r"does not record which flips"),
    (
        "tta-without-training-flips",
        lambda c: (c.copy(RUN), c.edit_json(f"{RUN}/spine_keras.json", lambda d: d.update(train_flips=[]))),
        [RUN, "scan.nrrd", "--tta"],
        r"--tta: the model saw no flipped samples in training.*--tta all",
    ),
    (
        "tta-folds-flipped-differently",
        folds_flipped_differently,
        ["ens", "scan.nrrd", "--tta"],
        r"the folds of 'ens' were trained with different flips; pass --tta all",
    ),
    (
        "field-train-flips",
        lambda c: (c.copy(RUN), c.edit_json(f"{RUN}/spine_keras.json", lambda d: d.update(train_flips=[5]))),
        [RUN, "scan.nrrd"],
        r"field 'train_flips' \[5\] needs distinct sample axes",
    ),
    (
        "field-context-channels",
        lambda c: (c.copy(RUN), c.edit_json(f"{RUN}/spine_keras.json", lambda d: d["sampling"].update(context=2))),
        [RUN, "scan.nrrd"],
        r"field 'input_shape' has 1 channel\(s\), not a multiple of the 5 slices",
    ),
]

EXPORT_CASES = [
    ("run-missing", lambda c: None, ["nowhere"], r"run folder 'nowhere' not found"),
    ("run-empty", lambda c: (c.folder / "empty").mkdir(), ["empty"], r"no model in 'empty'"),
    ("out-is-file", lambda c: (c.copy(RUN), (c.folder / "x.txt").write_text("x")), [RUN, "-o", "x.txt"], r"is a file"),
    (
        "out-not-export",
        lambda c: (c.copy(RUN), (c.folder / "mine").mkdir(), (c.folder / "mine/notes.txt").write_text("x")),
        [RUN, "-o", "mine"],
        r"'mine' exists and is not a spine_keras export",
    ),
    ("out-is-run", lambda c: c.copy(RUN), [RUN, "-o", RUN], r"is not a spine_keras export"),
    ("out-parent-missing", lambda c: c.copy(RUN), [RUN, "-o", "a/b/c"], r"folder 'a/b' does not exist"),
    (
        "out-unwritable",
        lambda c: (c.copy(RUN), c.readonly("locked")),
        [RUN, "-o", "locked/exp"],
        r"folder 'locked' is not writable",
    ),
    (
        "field-arch",
        lambda c: (c.copy(RUN), c.edit_json(f"{RUN}/spine_keras.json", lambda d: d.update(arch=""))),
        [RUN],
        r"field 'arch' must be a non-empty string",
    ),
    (
        "field-axis",
        lambda c: (c.copy(RUN), c.edit_json(f"{RUN}/spine_keras.json", lambda d: d.update(axis=0))),
        [RUN],
        r"field 'axis' is 0 but the bundle implies 2",
    ),
    (
        "fold-bad-metadata",
        lambda c: (c.copy("mixed"), (c.folder / "mixed/fold_1/spine_keras.json").write_text("[]")),
        ["mixed"],
        r"fold_1/spine_keras.json' is not spine_keras model metadata",
    ),
    ("unknown-flag", lambda c: c.copy(RUN), [RUN, "--force"], r"unrecognized arguments: --force"),
]

MODELS = [
    ("filters-zero", ["--filters", "0"], r"--filters.*out of range"),
    ("filters-text", ["--filters", "many"], r"--filters.*not an integer"),
    ("depth-zero", ["--depth", "0"], r"--depth.*out of range"),
    ("depth-huge", ["--depth", "40"], r"--depth.*out of range"),
    ("classes-one", ["--classes", "1"], r"--classes.*out of range"),
    ("shape2d-zero", ["--shape2d", "0", "256", "1"], r"--shape2d.*out of range"),
    ("shape3d-short", ["--shape3d", "64", "64", "1"], r"--shape3d.*expected 4 arguments"),
    ("dpi-zero", ["--dpi", "0"], r"--dpi.*out of range"),
    ("dims-four", ["--dims", "4"], r"--dims.*invalid choice"),
    ("arch-unknown", ["--archs", "zz"], r"unknown architecture 'zz'"),
    ("not-divisible", ["--archs", "u1", "--dims", "2", "--shape2d", "100", "100", "1"], r"H=100 is not divisible"),
    ("multi-kernel-filters", ["--archs", "umd", "--filters", "2"], r"filters must be an integer >= 4"),
]


@pytest.mark.parametrize(("setup", "args", "match"), [c[1:] for c in PREDICT], ids=[c[0] for c in PREDICT])
def test_predict_refuses(refusal, templates, request, tmp_path, setup, args, match):
    case = Case(tmp_path, templates, request)
    setup(case)
    if not (tmp_path / "scan.nrrd").exists():
        case.scan()
    refusal.check("predict", *args, match=match)


@pytest.mark.parametrize(("setup", "args", "match"), [c[1:] for c in EXPORT_CASES], ids=[c[0] for c in EXPORT_CASES])
def test_export_refuses(refusal, templates, request, tmp_path, setup, args, match):
    setup(Case(tmp_path, templates, request))
    refusal.check("export", *args, match=match)


def test_models_refuses_paths(refusal, tmp_path):
    (tmp_path / "a_file").write_text("x")
    refusal.check("models", "--diagram", "a_file", match=r"--diagram folder 'a_file' is a file")
    refusal.check("models", "--plot-model", "no/such", match=r"folder 'no' does not exist")


@pytest.mark.parametrize(("args", "match"), [c[1:] for c in MODELS], ids=[c[0] for c in MODELS])
def test_models_refuses(refusal, args, match):
    refusal.check("models", *args, match=match)


@pytest.fixture(scope="module")
def instance_files(tmp_path_factory, instance_masks, hand_set_instance_run) -> Path:
    """Two phantom mask/label pairs of three vertebrae (L3-L5) and a hand-set spine-instances run, built once."""
    root = tmp_path_factory.mktemp("instances")
    instance_masks(root)
    hand_set_instance_run(root / "run")
    return root


def edit_instances(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    """The run's instances.json edited by hand."""

    def setup(folder: Path) -> None:
        path = folder / "run" / "instances.json"
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))

    return setup


def write_text(name: str, text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).parent.mkdir(parents=True, exist_ok=True) or (folder / name).write_text(text)


BASELINE = ["baseline", "masks.txt", "--out", "b", "--levels"]
INSTANCES = [
    ("levels-upwards", None, [*BASELINE, "L5-L1"], r"--levels: range 'L5-L1' runs upwards"),
    ("levels-unknown", None, [*BASELINE, "X3"], r"--levels: unknown vertebra level 'X3'"),
    ("levels-empty", None, [*BASELINE, ""], r"--levels: cannot read ''"),
    ("levels-twice", None, [*BASELINE, "L3,L3"], r"--levels 'L3,L3': every level once"),
    ("levels-count-differs", None, [*BASELINE, "L1-L5"], r"case p2: label map has 3 vertebra id\(s\) but "
     r"--levels names 5 \(L1-L5\)"),
    ("list-file-missing", write_text("masks.txt", "gone.nrrd,p2_label.nrrd\n"), [*BASELINE, "L3-L5"],
     r"masks.txt line 1: file .*gone.nrrd' not found"),
    ("out-exists", write_text("b/x", "x"), [*BASELINE, "L3-L5"], r"output folder 'b' already exists and is not empty"),
    ("train-filters-fraction", None, ["train", "masks.txt", "--levels", "L3-L5", "--out", "r", "--filters", "2.5"],
     r"--filters must be a whole number, not 2.5"),
    ("train-seed-negative", None, ["train", "masks.txt", "--levels", "L3-L5", "--out", "r", "--seed", "-1"],
     r"--seed must be in \[0, 2\*\*32\)"),
    ("train-lr-schedule-unknown", None, ["train", "masks.txt", "--levels", "L3-L5", "--out", "r", "--lr-schedule",
     "poly"], r"--lr-schedule must be constant or cosine"),
    ("train-patch-huge", None, ["train", "masks.txt", "--levels", "L3-L5", "--out", "r", "--patch", "512,48,48"],
     r"--patch must be at most 256 a side"),
    ("predict-not-a-run", None, ["predict", "masks.txt", "masks.txt", "--out", "p"], r"'masks.txt' is no "
     r"spine-instances run"),
    ("predict-levels-edited", edit_instances(lambda d: d.update(levels=["L5", "L3"])),
     ["predict", "run", "masks.txt", "--out", "p"], r"field 'levels' must list level names top to bottom"),
    ("predict-traversal-edited", edit_instances(lambda d: d["traversal"].update(threshold=float("nan"))),
     ["predict", "run", "masks.txt", "--out", "p"], r"field 'traversal' disagrees with the run's settings"),
    ("predict-anchor-edited", edit_instances(lambda d: d.update(anchor="middle")),
     ["predict", "run", "masks.txt", "--out", "p"], r"field 'anchor' must be 'bottom' or 'top'"),
    ("export-out-exists", write_text("e/x", "x"), ["export", "run", "--out", "e"], r"export folder 'e' already exists"),
]  # fmt: skip


@pytest.mark.parametrize(("setup", "args", "match"), [c[1:] for c in INSTANCES], ids=[c[0] for c in INSTANCES])
def test_instances_refuses(refusal, instance_files, tmp_path, setup, args, match):
    for item in instance_files.iterdir():
        (shutil.copytree if item.is_dir() else shutil.copy)(item, tmp_path / item.name)
    if setup:
        setup(tmp_path)
    refusal.check("instances", *args, match=match)


# Untrusted SavedModels (class 8): these load TensorFlow in the subprocess.


def hostile_export(folder: Path, target: Path) -> Path:
    """An export folder whose SavedModel's `serve` writes `target` (tf.io.write_file), with valid metadata and
    hashes: only the op allow-list stands between it and the file system."""
    import tensorflow as tf

    from spine_keras.bundle import ExportInfo, ModelBundle
    from spine_keras.export import exported_hashes
    from spine_keras.prepare import SamplingConfig
    from spine_keras.preprocess import PreprocessConfig

    class Hostile(tf.Module):
        def __init__(self):
            super().__init__()
            self.weight = tf.Variable(1.0)

        @tf.function(input_signature=[tf.TensorSpec([None, 16, 16, 1], tf.float32)])
        def serve(self, image):
            tf.io.write_file(str(target), "written by a SavedModel")
            probabilities = tf.concat([image * 0.0, image * 0.0 + self.weight, image * 0.0], axis=-1)
            return {"probabilities": probabilities, "labels": tf.argmax(probabilities, -1, output_type=tf.int32)}

    tf.saved_model.save(Hostile(), str(folder / "saved_model"))
    ModelBundle(
        arch="u1",
        input_shape=(16, 16, 1),
        class_names=tuple(CLASSES),
        preprocess=PreprocessConfig(),
        sampling=SamplingConfig.from_dict({"mode": "2d", "shape": [16, 16]}),
        export=ExportInfo(input_shape=(None, 16, 16, 1), files=exported_hashes(folder)),
    ).write(folder)
    return folder


@pytest.mark.slow
def test_saved_model_that_writes_a_file_is_refused_unless_trusted(refusal, templates, request, tmp_path):
    case = Case(tmp_path, templates, request)
    case.scan()
    hostile_export(tmp_path / "hostile", tmp_path / "owned.txt")
    refusal.check("predict", "hostile", "scan.nrrd", match=r"allow-list of tensor ops \(WriteFile\).*--trust-model")
    assert not (tmp_path / "owned.txt").exists()
    trusted = refusal.run("predict", "hostile", "scan.nrrd", "--trust-model")
    assert trusted.returncode == 0, trusted.stderr
    assert (tmp_path / "owned.txt").is_file() and (tmp_path / "predictions" / "scan_seg.nrrd").is_file()


@pytest.mark.slow
def test_keras_lambda_layer_is_refused_by_safe_mode(refusal, templates, request, tmp_path):
    import keras

    case = Case(tmp_path, templates, request)
    case.copy(RUN)
    case.scan()
    inputs = keras.Input((16, 16, 1))
    outputs = keras.layers.Lambda(lambda x: keras.ops.concatenate([x * 0, x * 0 + 1, x * 0], axis=-1), name="seg")(
        inputs
    )
    keras.Model(inputs, outputs).save(tmp_path / RUN / "best.keras")
    refusal.check("predict", RUN, "scan.nrrd", match=r"cannot load model .*best.keras.*safe_mode")


@pytest.mark.slow
@pytest.mark.parametrize("dims", [2, 3])
def test_every_block_type_export_passes_the_allow_list(tmp_path, write_bundle, dims):
    """The allow-list holds every op a real export needs, for every block type the 8 archs are made of: plain
    convolutions (u1), attention gates, inception blocks and deep supervision (uamd), the VGG16 encoder (uvad) and
    FCN8 (fcn)."""
    from spine_keras.export import export_bundle
    from spine_keras.models import build_model
    from spine_keras.predict.graph_check import check_saved_model

    for arch in ("u1", "uamd", "uvad", "fcn"):
        overrides = {"filters": 4} | ({} if arch == "fcn" else {"depth": 2})
        model = build_model(arch, (32,) * dims + (1,), 3, **overrides)
        out = export_bundle(write_bundle(tmp_path / arch, model, f"{dims}d"))
        check_saved_model(out / "saved_model")


# Full disk (class 4): a small tmpfs, where the machine lets the tests mount one.


@contextlib.contextmanager
def small_disk(folder: Path, size: str):
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=False).returncode:
        pytest.skip("mounting a small tmpfs is not permitted here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.mark.slow
def test_export_on_a_full_disk_leaves_nothing(refusal, templates, request, tmp_path):
    with small_disk(tmp_path / "disk", "40k") as disk:
        run = disk / RUN
        run.mkdir()
        for name in ("best.keras", "spine_keras.json"):
            shutil.copy(templates / RUN / name, run / name)
        refusal.check("export", f"disk/{RUN}", match=r"cannot write export folder 'disk/run/export'.*no space left")


@pytest.mark.slow
def test_predict_on_a_full_disk_keeps_and_lists_what_it_wrote(refusal, templates, request, tmp_path):
    case = Case(tmp_path, templates, request)
    case.copy(RUN)
    for name in ("a.nrrd", "b.nrrd"):
        case.scan(name, shape=(64, 64, 24))  # a label map of 96 KiB uncompressed
    with small_disk(tmp_path / "disk", "160k"):
        result = refusal.run("predict", RUN, "a.nrrd", "b.nrrd", "-o", "disk/out", "--format", "nii")
        left = sorted(p.name for p in (tmp_path / "disk" / "out").iterdir())
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert re.search(r"cannot write 'disk/out/b_seg.nii' \(no space left.*stopped after 1 complete case", lines[0])
    assert "a: " in result.stdout and "disk/out/a_seg.nii" in result.stdout
    assert left == ["a_seg.nii"]


def test_a_failed_write_removes_the_case_and_names_the_path(tmp_path, monkeypatch):
    """A writer that fails half-way (ENOSPC after writing a detached header) leaves none of that case's files."""
    import errno

    from spine_keras.predict import run as predict_run
    from spine_keras.predict.volume import Prediction

    def half_write(volume, path):
        Path(path).write_text("half a header")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(predict_run, "write_volume", half_write)
    job = predict_run.Job("", tmp_path / "scan.nhdr", None, "scan")
    volume = Volume(np.zeros((4, 4, 3), np.uint8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))
    options = predict_run.PredictOptions(out_dir=tmp_path / "out")
    options.out_dir.mkdir()
    with pytest.raises(
        predict_run.UserError, match=r"cannot write '.*scan_seg.nhdr' \(no space left.*after 2 complete"
    ):
        predict_run.write_case(job, Prediction(volume, None), options, 2)
    assert not any(options.out_dir.iterdir())
