"""Lists and volume readers/writers: parsing rules, geometry round trips, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spine_keras.errors import CaseError, UserError
from spine_keras.io import Volume, case_id_from_path, parse_list, read_volume, suffix_of, write_volume


def test_parse_list_trims_skips_and_resolves(tmp_path: Path) -> None:
    sub = tmp_path / "lists"
    sub.mkdir()
    text = "# header comment\n\n  a_image.nrrd ,  a_label.nrrd  # trailing\n/abs/b.nii.gz,/abs/b_seg.nii.gz\n"
    (sub / "l.txt").write_text(text)
    entries = parse_list(sub / "l.txt")
    assert [e.case_id for e in entries] == ["a", "b"]
    assert entries[0].image == sub.resolve() / "a_image.nrrd"
    assert entries[0].label == sub.resolve() / "a_label.nrrd"
    assert entries[1].image == Path("/abs/b.nii.gz")
    assert entries[0].source.endswith("l.txt line 3")


@pytest.mark.parametrize(
    "line, expected",
    [
        ("only_one.nrrd", "malformed line"),
        ("a.nrrd,b.nrrd,c.nrrd", "malformed line"),
        ("a.nrrd,", "malformed line"),
        ("a.png,b.png", "unsupported file type"),
    ],
)
def test_parse_list_rejects_bad_lines(tmp_path: Path, line: str, expected: str) -> None:
    (tmp_path / "l.txt").write_text(f"# c\n{line}\n")
    with pytest.raises(UserError, match=expected) as info:
        parse_list(tmp_path / "l.txt")
    assert "line 2" in str(info.value)


def test_parse_list_empty_and_missing(tmp_path: Path) -> None:
    (tmp_path / "l.txt").write_text("# nothing\n\n")
    with pytest.raises(UserError, match="no 'image,label' lines"):
        parse_list(tmp_path / "l.txt")
    with pytest.raises(UserError, match="not found"):
        parse_list(tmp_path / "missing.txt")


def test_duplicate_case_ids_get_line_suffix(tmp_path: Path) -> None:
    (tmp_path / "l.txt").write_text("x/a_image.nrrd,x/a_label.nrrd\ny/a_image.nrrd,y/a_label.nrrd\n")
    assert [e.case_id for e in parse_list(tmp_path / "l.txt")] == ["a", "a_line2"]


def test_case_id_and_suffix() -> None:
    assert case_id_from_path(Path("VB2_02_image.nrrd")) == "VB2_02"
    assert case_id_from_path(Path("sub-01_T2.nii.gz")) == "sub-01"
    assert suffix_of("x/Y.NII.GZ") == ".nii.gz"


@pytest.mark.parametrize("suffix", [".nrrd", ".nhdr", ".nii.gz", ".nii", ".mha", ".mhd"])
def test_geometry_round_trip(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(1)
    array = rng.integers(0, 500, (7, 6, 5)).astype(np.int16)
    angle = np.deg2rad(30)
    direction = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    volume = Volume(array, (0.8, 1.25, 3.0), (10.0, -20.5, 7.25), direction)
    path = tmp_path / f"v{suffix}"
    write_volume(volume, path)
    back = read_volume(path)
    np.testing.assert_array_equal(back.array, array)
    np.testing.assert_allclose(back.spacing, volume.spacing, atol=1e-6)
    np.testing.assert_allclose(back.origin, volume.origin, atol=1e-6)
    np.testing.assert_allclose(back.direction, direction, atol=1e-6)


def test_nrrd_read_by_both_readers_agrees(tmp_path: Path) -> None:
    """pynrrd and SimpleITK give the same array order and geometry for the same NRRD."""
    from spine_keras.io import _read_itk, _read_nrrd

    array = np.arange(4 * 3 * 2, dtype=np.uint8).reshape(4, 3, 2)
    write_volume(Volume(array, (1.0, 2.0, 3.0), (5.0, 6.0, 7.0), np.eye(3)), tmp_path / "v.nrrd")
    a, b = _read_nrrd(tmp_path / "v.nrrd"), _read_itk(tmp_path / "v.nrrd")
    np.testing.assert_array_equal(a.array, b.array)
    assert a.spacing == b.spacing == (1.0, 2.0, 3.0)
    np.testing.assert_allclose(a.origin, b.origin)


def test_read_errors(tmp_path: Path) -> None:
    with pytest.raises(CaseError, match="not found"):
        read_volume(tmp_path / "none.nrrd", "l.txt line 4")
    (tmp_path / "bad.nrrd").write_bytes(b"NRRD0004\ngarbage\n\n\x00\x01")
    with pytest.raises(CaseError, match="corrupt") as info:
        read_volume(tmp_path / "bad.nrrd", "l.txt line 4")
    assert "l.txt line 4" in str(info.value)
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(CaseError, match="unsupported"):
        read_volume(tmp_path / "x.png")


@pytest.mark.realdata
def test_shared_mri_geometry(shared_mri: Path) -> None:
    volume = read_volume(shared_mri / "VB3_01_image.nrrd")
    assert volume.shape == (224, 224, 77)
    assert volume.spacing == (1.0, 1.0, 1.0)
    from spine_keras.io import _read_itk

    np.testing.assert_array_equal(_read_itk(shared_mri / "VB3_01_image.nrrd").array, volume.array)
