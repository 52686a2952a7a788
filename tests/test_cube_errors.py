"""Bad input to make_cube: exit status 2, one clear message naming the line and path, no output left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from spine_keras.cli.make_cube import main as make_cube
from spine_keras.cube import read_attrs
from spine_keras.io import Volume, write_volume

REPO = Path(__file__).resolve().parents[1]


def run(list_path: Path, out: Path, *flags: str) -> int:
    return make_cube([str(list_path), "-o", str(out), "--quiet", "--workers", "1", "--shape", "32,32", *flags])


def assert_clean_failure(capsys, out: Path, *expected: str) -> None:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    for text in expected:
        assert text in err, err
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.*"))


def write_list(folder: Path, lines: list[str]) -> Path:
    path = folder / "list.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_missing_file(make_pair, tmp_path: Path, capsys) -> None:
    image, _ = make_pair(tmp_path, "a")
    lst = write_list(tmp_path, [f"{image.name},nothere_label.nrrd"])
    assert run(lst, tmp_path / "c.h5") == 2
    assert_clean_failure(capsys, tmp_path / "c.h5", "list.txt line 1", "nothere_label.nrrd", "not found")


def test_corrupt_volume(make_pair, tmp_path: Path, capsys) -> None:
    image, label = make_pair(tmp_path, "a")
    label.write_bytes(label.read_bytes()[:200])
    lst = write_list(tmp_path, [f"{image.name},{label.name}"])
    assert run(lst, tmp_path / "c.h5") == 2
    assert_clean_failure(capsys, tmp_path / "c.h5", "line 1", "a_label.nrrd", "corrupt")


def test_unsupported_extension_and_malformed_and_empty(tmp_path: Path, capsys) -> None:
    assert run(write_list(tmp_path, ["a.jpg,b.jpg"]), tmp_path / "c.h5") == 2
    assert_clean_failure(capsys, tmp_path / "c.h5", "line 1", "unsupported file type")
    assert run(write_list(tmp_path, ["# x", "a.nrrd b.nrrd"]), tmp_path / "c.h5") == 2
    assert_clean_failure(capsys, tmp_path / "c.h5", "line 2", "malformed")
    assert run(write_list(tmp_path, ["# only comments"]), tmp_path / "c.h5") == 2
    assert_clean_failure(capsys, tmp_path / "c.h5", "no 'image,label' lines")


def test_shape_and_spacing_mismatch(make_pair, tmp_path: Path, capsys) -> None:
    image, _ = make_pair(tmp_path, "a", shape=(40, 32, 12))
    _, label = make_pair(tmp_path, "b", shape=(40, 32, 13))
    assert run(write_list(tmp_path, [f"{image.name},{label.name}"]), tmp_path / "c.h5") == 2
    assert_clean_failure(capsys, tmp_path / "c.h5", "line 1", "(40, 32, 12)", "(40, 32, 13)", "b_label.nrrd")
    _, label2 = make_pair(tmp_path, "c", spacing=(1.0, 1.0, 2.0))
    assert run(write_list(tmp_path, [f"{image.name},{label2.name}"]), tmp_path / "c.h5") == 2
    assert_clean_failure(capsys, tmp_path / "c.h5", "spacing")


def test_label_values(make_pair, tmp_path: Path, capsys) -> None:
    image, label = make_pair(tmp_path, "a", label_ids=(1, 9))
    lst = write_list(tmp_path, [f"{image.name},{label.name}"])
    assert run(lst, tmp_path / "c.h5", "--label-map", "1-7:1") == 2
    assert_clean_failure(capsys, tmp_path / "c.h5", "line 1", "[9]", "not covered")
    geometry = dict(spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=np.eye(3))
    write_volume(Volume(np.full((40, 32, 12), 0.5, np.float32), **geometry), tmp_path / "f_label.nrrd")
    assert run(write_list(tmp_path, [f"{image.name},f_label.nrrd"]), tmp_path / "c.h5") == 2
    assert_clean_failure(capsys, tmp_path / "c.h5", "non-integer")


def test_shape_too_small_and_bad_flags(pair_list, tmp_path: Path, capsys) -> None:
    lst = pair_list(1)
    assert make_cube([str(lst), "-o", str(tmp_path / "c.h5"), "--shape", "8,8"]) == 2
    assert_clean_failure(capsys, tmp_path / "c.h5", "too small")
    assert make_cube([str(lst), "-o", str(tmp_path / "c.h5"), "--mode", "3d", "--shape", "32,32"]) == 2
    assert_clean_failure(capsys, tmp_path / "c.h5", "needs 3 sides")
    with pytest.raises(SystemExit) as info:
        make_cube([str(lst), "--mode", "4d"])
    assert info.value.code == 2


def test_skip_bad_records_cases(pair_list, tmp_path: Path, capsys) -> None:
    lst = pair_list(2)
    lst.write_text(lst.read_text() + "missing_image.nrrd,missing_label.nrrd\n")
    assert run(lst, tmp_path / "c.h5", "--skip-bad") == 0
    assert "warning: skipping case missing" in capsys.readouterr().err
    skipped = read_attrs(tmp_path / "c.h5")["skipped"]
    assert [s["case_id"] for s in skipped] == ["missing"] and "line 3" in skipped[0]["source"]


def test_existing_cube_needs_force(pair_list, tmp_path: Path, capsys) -> None:
    out = tmp_path / "c.h5"
    out.write_bytes(b"keep me")
    assert run(pair_list(1), out) == 2
    assert "--force" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    assert run(pair_list(1), out, "--force") == 0
    assert read_attrs(out)["mode"] == "2d"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_build_leaves_nothing(pair_list, tmp_path: Path, sig: int) -> None:
    lst = pair_list(60, shape=(40, 32, 12))  # many cases so the build is still running when killed
    out = tmp_path / "c.h5"
    cmd = [
        sys.executable,
        str(REPO / "scripts" / "make_cube.py"),
        str(lst),
        "-o",
        str(out),
        "--quiet",
        "--workers",
        "1",
        "--shape",
        "128,128",
        "--augment",
        "30",
    ]  # about a minute of work: still running when the signal comes, whatever the machine's speed
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.time() + 60
    while not list(tmp_path.glob(".c.h5.*.tmp")) and time.time() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.glob(".c.h5.*.tmp")), "the build never started writing"
    proc.send_signal(sig)
    proc.wait(timeout=30)
    assert proc.returncode != 0 and not out.exists()
    if sig == signal.SIGTERM:
        assert not list(tmp_path.glob(".c.h5.*"))
    else:  # SIGKILL cannot be caught: the next build removes the dead build's temporary file
        lst.with_name("one.txt").write_text(lst.read_text().splitlines()[0] + "\n")
        assert (
            make_cube([str(lst.with_name("one.txt")), "-o", str(out), "--quiet", "--workers", "1", "--shape", "32,32"])
            == 0
        )
        assert not list(tmp_path.glob(".c.h5.*")) and out.exists()


def test_2d_volume_and_roi_with_resize(tmp_path: Path, capsys) -> None:
    geometry = dict(spacing=(1.0, 1.0), origin=(0.0, 0.0), direction=np.eye(2))
    write_volume(Volume(np.ones((20, 20), np.float32), **geometry), tmp_path / "a_image.nrrd")
    write_volume(Volume(np.zeros((20, 20), np.uint8), **geometry), tmp_path / "a_label.nrrd")
    lst = write_list(tmp_path, ["a_image.nrrd,a_label.nrrd"])
    assert run(lst, tmp_path / "c.h5") == 2
    assert_clean_failure(capsys, tmp_path / "c.h5", "line 1", "2 spatial dimensions")
    assert run(lst, tmp_path / "c.h5", "--crop-roi", "5") == 2
    assert_clean_failure(capsys, tmp_path / "c.h5", "--fit pad")
    assert run(lst, tmp_path / "c.h5", "--label-map", "1:300") == 2
    assert_clean_failure(capsys, tmp_path / "c.h5", "above 255")
