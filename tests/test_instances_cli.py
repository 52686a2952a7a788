"""`spine-instances`: the baseline end to end, refusals, and the exported reference traversal run without
spine_keras against spine_keras's own prediction."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spine_keras.cli.instances import main
from spine_keras.io import read_volume
from spine_keras.levels import LEVEL_IDS

INSTANCE_ORIGIN = (4.0, -2.0, 1.0)  # the origin of conftest's instance phantoms


def test_baseline_command(tmp_path: Path, capsys: pytest.CaptureFixture, instance_masks) -> None:
    masks = instance_masks(tmp_path)
    out = tmp_path / "baseline"
    assert main(["baseline", str(masks), "--levels", "L3-L5", "--out", str(out)]) == 0
    assert "identification 1.0" in capsys.readouterr().out
    levels = read_volume(out / "p2_instances.nrrd")  # the mask p2_mask.nrrd is case p2
    assert levels.origin == INSTANCE_ORIGIN
    assert set(np.unique(levels.array)) == {0, LEVEL_IDS["L3"], LEVEL_IDS["L4"], LEVEL_IDS["L5"]}
    summary = json.loads((out / "summary.json").read_text())["pooled"]
    assert summary["vertebrae"] == 6 and summary["recall"] == 1.0 and summary["merged"] == 0
    assert summary["mean_dice"] == 1.0
    rows = json.loads((out / "p3_vertebrae.json").read_text())
    assert [r["level"] for r in rows] == ["L3", "L4", "L5"] and rows[0]["complete"] is None
    header = (out / "scores.csv").read_text().splitlines()[0]
    assert header == "case,level,matched_level,dice,assd_mm,found,identified,level_dice"


def test_refuses_levels_that_do_not_fit(tmp_path: Path, capsys: pytest.CaptureFixture, instance_masks) -> None:
    masks = instance_masks(tmp_path)
    out = tmp_path / "baseline"
    assert main(["baseline", str(masks), "--levels", "L1-L5", "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (
        "error: case p2: label map has 3 vertebra id(s) but --levels names 5 (L1-L5); give the levels this list's "
        "labels span"
    )
    assert not out.exists()
    assert main(["baseline", str(masks), "--levels", "L5-L3", "--out", str(out)]) == 2
    assert "runs upwards" in capsys.readouterr().err and not out.exists()


def test_refusal_as_a_user_sees_it(tmp_path: Path, refusal, instance_masks) -> None:
    instance_masks(tmp_path)
    refusal.check(
        "instances",
        "train",
        "masks.txt",
        "--levels",
        "L2-L5",
        "--out",
        "run",
        match=r"case p2_mask: .* 3 .* 4 \(L2-L5\)",
    )
    refusal.check("instances", "predict", "nowhere", "masks.txt", "--out", "x", match="no spine-instances run")


@pytest.mark.slow
def test_reference_traversal_without_spine_keras(tmp_path: Path, instance_masks, hand_set_instance_run) -> None:
    from spine_keras.cli import instances as cli

    instance_masks(tmp_path)
    (tmp_path / "images.txt").write_text("p2_image.nrrd\n")
    run = hand_set_instance_run(tmp_path / "run")
    assert cli.main(["predict", str(run), str(tmp_path / "images.txt"), "--out", str(tmp_path / "pred")]) == 0
    assert cli.main(["export", str(run), "--out", str(tmp_path / "export")]) == 0
    ours = read_volume(tmp_path / "pred" / "p2_instances.nrrd").array
    assert len(np.unique(ours)) >= 3  # the hand-set network finds vertebrae
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['spine_keras'] = None\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(blocker)}
    script = tmp_path / "export" / "reference_traversal.py"
    check = [sys.executable, "-c", "import spine_keras"]
    assert subprocess.run(check, env=env, cwd=tmp_path, capture_output=True).returncode != 0
    command = [sys.executable, str(script), str(tmp_path / "export"), "p2_image.nrrd", "ref.nrrd", "--table", "t.csv"]
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    theirs = read_volume(tmp_path / "ref.nrrd")
    np.testing.assert_array_equal(theirs.array, ours)
    assert theirs.origin == INSTANCE_ORIGIN
    assert len((tmp_path / "t.csv").read_text().splitlines()) == len(np.unique(ours))
