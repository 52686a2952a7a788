"""Bundle metadata: written atomically, found from a run folder, a SavedModel folder or a .keras file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spine_keras.bundle import BUNDLE_FORMAT, find_metadata, make_metadata, read_metadata, write_metadata
from spine_keras.errors import UserError


def metadata() -> dict:
    return make_metadata(
        arch="uamd",
        mode="2d",
        input_shape=[64, 64, 1],
        class_names=["background", "vertebra"],
        preprocess={"normalization": "zscore"},
        axis=2,
        label_map="1-7:1",
        model_config={"filters": 8},
        preset={"lr": 0.00033},
        cube={"n_classes": 2},
    )


def test_round_trip_and_lookup(tmp_path: Path) -> None:
    path = write_metadata(metadata(), tmp_path)
    data = read_metadata(tmp_path)
    assert data["format"] == BUNDLE_FORMAT and data["n_classes"] == 2 and data["axis"] == 2
    assert data["versions"]["spine_keras"] and json.loads(path.read_text())["arch"] == "uamd"
    (tmp_path / "best.keras").write_bytes(b"")
    assert find_metadata(tmp_path / "best.keras") == path
    saved = tmp_path / "export"
    write_metadata(metadata(), saved / "assets")
    assert find_metadata(saved) == saved / "assets" / "spine_keras.json"
    assert not list(tmp_path.glob(".*tmp*"))


def test_missing_or_foreign_metadata(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no spine_keras.json"):
        read_metadata(tmp_path)
    (tmp_path / "spine_keras.json").write_text('{"format": "other"}')
    with pytest.raises(UserError, match="not spine_keras model metadata"):
        read_metadata(tmp_path)
    (tmp_path / "spine_keras.json").write_text("{oops")
    with pytest.raises(UserError, match="cannot read"):
        read_metadata(tmp_path)
