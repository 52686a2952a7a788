"""The typed model bundle: written atomically, found from a run folder, a SavedModel folder or a .keras file,
and every bad field refused on load with one line naming the field and the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spine_keras.bundle import (
    BUNDLE_FORMAT,
    ModelBundle,
    Provenance,
    file_sha256,
    find_metadata,
    read_bundle,
)
from spine_keras.errors import UserError
from spine_keras.prepare import SamplingConfig
from spine_keras.preprocess import PreprocessConfig


def bundle() -> ModelBundle:
    return ModelBundle(
        arch="uamd",
        input_shape=(64, 64, 1),
        class_names=("background", "vertebra"),
        preprocess=PreprocessConfig(spacing=(1.0, 1.0, 2.5), normalization="percentile"),
        sampling=SamplingConfig(mode="2d", axis=1, shape=(64, 64)),
        label_map="1-7:1",
        build={"filters": 8, "final_activation": "none"},
        preset={"lr": 0.00033},
        provenance=Provenance(cube="/data/cube.h5", cube_sha256="ab" * 32, split="fold_0", val_cases=("VB3_01",)),
        metrics={"val_miou_nobg": 0.91},
        train_flips=(1,),
    )


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    original = bundle()
    path = original.write(tmp_path)
    loaded = read_bundle(tmp_path)
    assert loaded == original
    assert loaded.preprocess.spacing == (1.0, 1.0, 2.5) and loaded.sampling.axis == 1
    assert loaded.n_classes == 2 and loaded.mode == "2d" and loaded.window == (64, 64) and loaded.logits
    assert loaded.provenance.val_cases == ("VB3_01",) and loaded.metrics["val_miou_nobg"] == 0.91
    assert loaded.train_flips == (1,)
    raw = json.loads(path.read_text())
    assert raw["format"] == BUNDLE_FORMAT and raw["n_classes"] == 2 and raw["axis"] == 1 and raw["mode"] == "2d"
    assert not list(tmp_path.glob(".*tmp*"))


def test_found_beside_a_keras_file_and_inside_a_saved_model(tmp_path: Path) -> None:
    path = bundle().write(tmp_path)
    (tmp_path / "best.keras").write_bytes(b"")
    assert find_metadata(tmp_path / "best.keras") == path
    saved = tmp_path / "export"
    bundle().write(saved / "assets")
    assert find_metadata(saved) == saved / "assets" / "spine_keras.json"


def test_missing_or_foreign_metadata(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no spine_keras.json"):
        read_bundle(tmp_path)
    (tmp_path / "spine_keras.json").write_text('{"format": "other"}')
    with pytest.raises(UserError, match="not spine_keras model metadata"):
        read_bundle(tmp_path)
    (tmp_path / "spine_keras.json").write_text("{oops")
    with pytest.raises(UserError, match="cannot read"):
        read_bundle(tmp_path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("class_names"), "field 'class_names' is missing"),
        (lambda d: d.update(input_shape="64x64"), "field 'input_shape' must be a list of integers"),
        (lambda d: d.update(input_shape=[64, 64, 64, 1]), "field 'input_shape' .* needs 2 positive sides"),
        (lambda d: d.update(input_shape=[32, 32, 1]), "disagrees with 'sampling.shape'"),
        (lambda d: d["preprocess"].update(normalization="magic"), "field 'preprocess' must be valid"),
        (lambda d: d["sampling"].update(mode="4d"), "field 'sampling' must be valid"),
        (lambda d: d.update(label_map="1-x:2"), "field 'label_map'"),
        (lambda d: d.update(class_names=["background"]), "at least two names"),
        (lambda d: d.update(n_classes=3), "field 'n_classes' is 3 but the bundle implies 2"),
        (lambda d: d["provenance"].update(cube_hash="x"), "field 'provenance' must be known keys"),
        (lambda d: d.update(metrics=[1, 2]), "field 'metrics' must be a mapping"),
        (lambda d: d.update(train_flips=2), "field 'train_flips' must be a list of axis numbers"),
        (lambda d: d.update(train_flips=[2]), r"field 'train_flips' \[2\] needs distinct sample axes in \[0, 2\)"),
        (lambda d: d.update(train_flips=[1, 0]), "field 'train_flips' .* ascending"),
    ],
)
def test_each_bad_field_is_one_line_naming_field_and_file(tmp_path: Path, edit, message: str) -> None:
    path = bundle().write(tmp_path)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=message) as caught:
        read_bundle(tmp_path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_file_hash_is_the_sha256_of_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"abc")
    assert file_sha256(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert file_sha256(path, chunk=1) == file_sha256(path)
