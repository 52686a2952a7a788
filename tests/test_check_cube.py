"""check_cube: summary figures of a valid cube, the montage, and broken, truncated or foreign files."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from spine_keras.cli.check_cube import main as check_cube_cli
from spine_keras.cli.make_cube import main as make_cube
from spine_keras.cube import write_cube_arrays
from spine_keras.cube.check import check_cube


def small_cube(path: Path, **attrs) -> Path:
    labels = np.zeros((4, 16, 16), np.uint8)
    labels[:, 4:8, 4:8] = 1
    labels[0, 0, :4] = 2
    images = np.arange(4 * 16 * 16, dtype=np.float32).reshape(4, 16, 16) / 1024.0
    return write_cube_arrays(path, images, labels, ["a", "a", "b", "b"], augmented=[0, 1, 0, 0], **attrs)


def test_summary_figures(tmp_path: Path) -> None:
    report = check_cube(small_cube(tmp_path / "c.h5"))
    assert report.ok
    assert report.samples == 4 and report.originals == 3
    assert report.per_case == {"a": 2, "b": 2}
    assert report.class_voxels == [4 * 256 - 64 - 4, 64, 4]
    assert report.intensity["min"] == 0.0 and report.intensity["max"] == (4 * 256 - 1) / 1024.0
    assert abs(report.intensity["mean"] - (4 * 256 - 1) / 2048.0) < 1e-6
    assert "class voxel frequency" in report.summary()


def test_label_out_of_range_and_nan_are_problems(tmp_path: Path, capsys) -> None:
    path = small_cube(tmp_path / "c.h5", n_classes=2, class_names=["background", "x"])
    with h5py.File(path, "r+") as f:
        f["images"][1, 0, 0, 0] = np.nan
    report = check_cube(path)
    assert not report.ok
    assert any("ids >= n_classes" in p for p in report.problems)
    assert any("1 image values are NaN" in p for p in report.problems)
    assert check_cube_cli([str(path)]) == 1
    assert "invalid" in capsys.readouterr().err


def test_truncated_foreign_and_missing(tmp_path: Path, capsys) -> None:
    path = small_cube(tmp_path / "c.h5")
    data = path.read_bytes()
    (tmp_path / "t.h5").write_bytes(data[: len(data) // 2])
    assert check_cube_cli([str(tmp_path / "t.h5")]) != 0
    foreign = tmp_path / "f.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(3)
    assert check_cube_cli([str(foreign)]) == 2
    assert "not a spine_keras cube" in capsys.readouterr().err
    assert check_cube_cli([str(tmp_path / "none.h5")]) == 2
    (tmp_path / "text.h5").write_text("hello")
    assert check_cube_cli([str(tmp_path / "text.h5")]) == 2
    assert "not a readable HDF5" in capsys.readouterr().err


def test_missing_dataset_is_reported(tmp_path: Path) -> None:
    path = small_cube(tmp_path / "c.h5")
    with h5py.File(path, "r+") as f:
        del f["case_ids"]
    report = check_cube(path)
    assert report.problems == ["missing dataset 'case_ids'"]


def test_montage_from_built_cube(pair_list, tmp_path: Path, capsys) -> None:
    cube = tmp_path / "c.h5"
    assert (
        make_cube(
            [str(pair_list(2)), "-o", str(cube), "--quiet", "--workers", "1", "--shape", "32,32", "--augment", "2"]
        )
        == 0
    )
    png = tmp_path / "m.png"
    assert check_cube_cli([str(cube), "--png", str(png), "--rows", "3"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000
    out = capsys.readouterr().out
    assert "OK" in out and "48 augmented" in out


def test_montage_colours_each_class_by_its_fixed_colour_and_names_the_classes(tmp_path: Path, monkeypatch) -> None:
    from matplotlib.colors import to_rgb

    from spine_keras import outputs
    from spine_keras.cube.check import montage

    drawn = []
    monkeypatch.setattr(outputs, "save_figure", lambda figure, path, dpi=100: drawn.append(figure) or Path(path))
    cube = small_cube(tmp_path / "c.h5", n_classes=4, class_names=["background", "vertebra", "disc", "canal"])
    montage(cube, tmp_path / "m.png", rows=3)  # all three originals; sample 0 (row 0, column 0) holds class 2
    (figure,) = drawn
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["vertebra", "disc", "canal"]
    assert "c.h5" in figure.texts[0].get_text()  # the title names the cube
    overlays = [ax.images[1].get_array() for ax in figure.axes if ax.images]
    assert len(overlays) == 3  # one per original (no augmented copy shares an original's position here)
    vertebra, disc = to_rgb("#e6194b"), to_rgb("#3cb44b")  # classes 1 and 2, whatever the class count
    for overlay in overlays:
        np.testing.assert_allclose(overlay[5, 5], [*vertebra, 0.45])
        assert overlay[12, 12, 3] == 0  # background stays transparent
    np.testing.assert_allclose(overlays[0][0, 0], [*disc, 0.45])


def test_montage_wraps_a_title_wider_than_its_one_column(tmp_path: Path, monkeypatch) -> None:
    """A narrow montage (here two 2.6-inch columns) wraps a long title instead of clipping it."""
    from spine_keras import outputs
    from spine_keras.cube.check import TITLE_CHARS_PER_INCH, montage

    drawn = []
    monkeypatch.setattr(outputs, "save_figure", lambda figure, path, dpi=100: drawn.append(figure) or Path(path))
    cube = small_cube(tmp_path / "c.h5", n_classes=2, class_names=["background", "vertebra"])
    title = "study sequences: cube 9d9f228829a9 (2d, 128x128, ignore above labels), originals and augmented copies"
    montage(cube, tmp_path / "m.png", rows=2, title=title)
    (figure,) = drawn
    lines = figure.texts[0].get_text().split("\n")
    assert len(lines) >= 2 and " ".join(lines) == title  # every word kept, in order
    assert max(map(len, lines)) <= figure.get_figwidth() * TITLE_CHARS_PER_INCH
