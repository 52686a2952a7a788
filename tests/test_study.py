"""spine-study: study-file validation (one line, exit 2, before anything runs), the step listing, and a phantom
study end to end (two training lists labelled differently, a test list, 2D and 3D, two folds): a kill and the
rerun, the results folder of the contract, resume after a lost step, and `--jobs 2`."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from spine_keras.io import Volume, write_volume
from spine_keras.phantom import GEOMETRY, make_phantom

REPO = Path(__file__).resolve().parents[1]
SHAPE = (48, 40, 12)
TRAIN = {"epochs": 1, "filters": 4, "depth": 2, "batch_size": 2, "verbose": 0, "patience": 0, "lr_patience": 0}
VARIANTS = [{"mode": "2d", "arch": "u1", "shape": [32, 32]}, {"mode": "3d", "arch": "u1", "shape": [16, 32, 32]}]


def write_cases(folder: Path, name: str, seeds: list[int], shift: int = 0) -> Path:
    """Phantom pairs (ids 1 vertebra, 2 disc; `shift` added to every non-zero id) and a list naming them."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for seed in seeds:
        image, label = make_phantom(seed, SHAPE)
        label = np.where(label > 0, label + shift, 0).astype(np.uint8)
        stem = f"{name}{seed:02d}"
        write_volume(Volume(image, **GEOMETRY), folder / f"{stem}_image.nrrd")
        write_volume(Volume(label, **GEOMETRY), folder / f"{stem}_label.nrrd")
        lines.append(f"{stem}_image.nrrd,{stem}_label.nrrd")
    path = folder / f"{name}.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """List a (ids 1,2), list b (the same anatomy relabelled 3,4), and a test list (ids 1,2)."""
    folder = tmp_path_factory.mktemp("study_data")
    return {
        "a": write_cases(folder, "a", [0, 1, 2]),
        "b": write_cases(folder, "b", [3, 4], shift=2),
        "test": write_cases(folder, "t", [5]),
    }


def study(lists: dict[str, Path], **changes) -> dict:
    """A valid study mapping over the phantom lists; `changes` replace top-level keys."""
    base = {
        "name": "phantom",
        "output": "out",
        "data": train_lists(lists, test={"list": str(lists["test"]), "label_map": "1-2:1"}),
        "classes": ["background", "vertebra"],
        "cube": {"augment": 0, "workers": 1},
        "variants": VARIANTS,
        "folds": 2,
        "seed": 0,
        "train": TRAIN,
    }
    return {**base, **changes}


def write_study(folder: Path, content: dict | str, name: str = "study.yaml") -> Path:
    path = folder / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


def train_lists(data, a_map="1-2:1", b_map="3-4:1", **extra) -> dict:
    return {
        "train": [{"list": str(data["a"]), "label_map": a_map}, {"list": str(data["b"]), "label_map": b_map}],
        **extra,
    }


# (id, study changes given the data, extra args, expected message)
REFUSALS = [
    (
        "unknown_top_key",
        lambda d: study(d, colour="red"),
        (),
        r"unknown key\(s\) colour in the top level; valid keys: name",
    ),
    (
        "unknown_variant_key",
        lambda d: study(d, variants=[{"mode": "2d", "arch": "u1", "size": 3}]),
        (),
        r"variants\[0\]",
    ),
    ("unknown_cube_key", lambda d: study(d, cube={"copies": 2}), (), r"unknown cube setting\(s\) copies.*valid keys"),
    ("unknown_train_key", lambda d: study(d, train={"epoch": 1}), (), r"unknown training setting\(s\): epoch"),
    ("train_key_of_study", lambda d: study(d, train={"folds": 3}), (), r"train\.folds is set by the study"),
    ("bad_train_value", lambda d: study(d, train={"epochs": 0}), (), r"variant 2d-u1: epochs must be a positive"),
    (
        "bad_cube_value",
        lambda d: study(d, cube={"normalization": "zz"}),
        (),
        r"bad cube settings.*unknown normalization",
    ),
    (
        "missing_list",
        lambda d: study(d, data={"train": [{"list": "nowhere.txt"}]}),
        (),
        r"list file .*nowhere\.txt' not found",
    ),
    (
        "map_misses_ids",
        lambda d: study(d, data=train_lists(d, b_map="1-2:1")),
        (),
        r"data\.train\[1\].*label ids \[3, 4\] are not covered",
    ),
    (
        "map_more_classes",
        lambda d: study(d, data=train_lists(d, a_map="1:1,2:2")),
        (),
        r"produces 3 classes but the study's classes are 2",
    ),
    (
        "list_classes_differ",
        lambda d: study(d, data={"train": [{"list": str(d["a"]), "label_map": "1-2:1", "classes": ["bg", "bone"]}]}),
        (),
        r"names classes bg, bone",
    ),
    (
        "test_overlaps_train",
        lambda d: study(d, data=train_lists(d, test={"list": str(d["a"]), "label_map": "1-2:1"})),
        (),
        r"test list .* shares case\(s\) a00",
    ),
    (
        "case_twice_in_train",
        lambda d: study(d, data={"train": [{"list": str(d["a"]), "label_map": "1-2:1"}] * 2}),
        (),
        r"case a00 is in data\.train\[1\] and in data\.train\[0\]",
    ),
    ("variant_twice", lambda d: study(d, variants=[VARIANTS[0], VARIANTS[0]]), (), r"variant 2d-u1 is listed twice"),
    (
        "bad_arch",
        lambda d: study(d, variants=[{"mode": "2d", "arch": "unet9"}]),
        (),
        r"variants\[0\]\.arch: unknown architecture",
    ),
    (
        "shape_not_divisible",
        lambda d: study(d, variants=[{"mode": "2d", "arch": "u1", "shape": [36, 36]}], train={}),
        (),
        r"variant 2d-u1: input side H=36 is not divisible by 2\^4=16",
    ),
    ("bad_mode", lambda d: study(d, variants=[{"mode": "4d", "arch": "u1"}]), (), r"mode must be one of 2d, 3d"),
    ("too_few_folds", lambda d: study(d, folds=1), (), r"folds must be a whole number >= 2"),
    ("missing_key", lambda d: {k: v for k, v in study(d).items() if k != "variants"}, (), r"missing 'variants'"),
    ("not_yaml", lambda d: "data: [unclosed", (), r"cannot be read as YAML"),
    ("no_such_step", lambda d: study(d), ("--step", "99"), r"--step 99: no such step; give a number from 1 to 12"),
    (
        "step_needs_others",
        lambda d: study(d),
        ("--step", "3"),
        r"step 3 \(train-2d-u1-fold0\) needs step\(s\) 1 \(cube-",
    ),
    ("jobs_zero", lambda d: study(d), ("--jobs", "0"), r"--jobs: 0 is out of range"),
    ("two_actions", lambda d: study(d), ("--list-steps", "--report"), r"at most one of"),
    ("report_without_results", lambda d: study(d), ("--report",), r"holds no study results"),
]


@pytest.mark.parametrize("case_id,content,args,match", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_study_refusals(refusal, tmp_path, data, case_id, content, args, match):
    path = write_study(tmp_path, content(data))
    refusal.check("study", path.name, *args, match=match)


def test_missing_study_file(refusal):
    refusal.check("study", "absent.yaml", match=r"study file 'absent\.yaml' not found")


def test_list_steps(refusal, tmp_path, data):
    write_study(tmp_path, study(data))
    result = refusal.run("study", "study.yaml", "--list-steps")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.strip().splitlines()[1:]]
    ids = [row[1] for row in rows]
    assert [row[0] for row in rows] == [str(i) for i in range(1, 13)]
    assert ids[:2] == [i for i in ids if i.startswith("cube-")] and len(set(ids[:2])) == 2
    assert ids[2:] == [
        *(f"{kind}-2d-u1-fold{k}" for kind in ("train", "predict") for k in (0, 1)),
        "test-2d-u1",
        *(f"{kind}-3d-u1-fold{k}" for kind in ("train", "predict") for k in (0, 1)),
        "test-3d-u1",
    ]
    needs = {row[1]: row[3] for row in rows}
    assert needs["train-2d-u1-fold1"] == "1" and needs["predict-2d-u1-fold1"] == "4" and needs["test-2d-u1"] == "3,4"
    assert all(row[2] == "pending" for row in rows)
    assert not (tmp_path / "out").exists()


def run_study(folder: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(REPO / "scripts" / "study.py"), "study.yaml", *args]
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)


def mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data) -> dict:
    """The study killed once its first fold is trained, then rerun to the end; what each run left."""
    folder = tmp_path_factory.mktemp("study_run")
    write_study(folder, study(data))
    out = folder / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(REPO / "scripts" / "study.py"), "study.yaml"]
    process = subprocess.Popen(command, cwd=folder, env=env, start_new_session=True, stderr=subprocess.DEVNULL)
    marker = out / "steps" / "train-2d-u1-fold0.done"
    deadline = time.monotonic() + 240
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = mtimes(out)
    start = time.perf_counter()
    result = run_study(folder)
    return {"folder": folder, "out": out, "before": before, "result": result, "seconds": time.perf_counter() - start}


@pytest.mark.slow
def test_killed_study_reruns_only_unfinished(finished):
    result, out, before = finished["result"], finished["out"], finished["before"]
    assert result.returncode == 0, result.stderr
    after = mtimes(out)
    kept = [p for p in before if p.startswith(("steps/cube-", "steps/train-2d-u1-fold0", "runs/2d-u1/fold_0/"))]
    assert "steps/train-2d-u1-fold0.done" in kept
    assert all(after.get(p) == before[p] for p in kept), "a finished step was redone"
    assert not list(out.rglob("*.partial")), "a killed fold's work folder was left"


@pytest.mark.slow
def test_results_folder(finished):
    out = finished["out"]
    assert finished["result"].returncode == 0, finished["result"].stderr
    info = json.loads((out / "study.json").read_text())
    assert {"hardware", "versions", "variants", "fold_cases"} <= set(info)
    assert sorted(c for fold in info["fold_cases"] for c in fold) == ["a00", "a01", "a02", "b03", "b04"]
    assert len(list((out / "cubes").glob("*/cube.h5"))) == 2
    for variant in ("2d-u1", "3d-u1"):
        for k in (0, 1):
            fold = out / "runs" / variant / f"fold_{k}"
            assert {"best.keras", "spine_keras.json", "history.csv", "iou_table.csv", "timing.json"} <= {
                p.name for p in fold.iterdir()
            }
            timing = json.loads((fold / "timing.json").read_text())
            assert timing["epochs"] == 1 and timing["train_seconds"] > 0 and timing["peak_rss_mb"] > 0
        rows = list(csv.DictReader((out / "predictions" / variant / "val" / "metrics.csv").open()))
        assert [r["class"] for r in rows[:2]] == ["vertebra", "background"]
        assert sorted(r["case"] for r in rows) == sorted(2 * info["fold_cases"][0] + 2 * info["fold_cases"][1])
        assert all(r["fold"] == str(k) for k in (0, 1) for r in rows if r["case"] in info["fold_cases"][k])
        assert all(float(r["truth_voxels"]) > 0 and r["dice"] != "" for r in rows)
        test = list(csv.DictReader((out / "predictions" / variant / "test" / "metrics.csv").open()))
        assert [(r["case"], r["fold"]) for r in test] == [("t05", "ensemble")] * 2
        assert (out / "predictions" / variant / "test" / "t05_seg.nrrd").is_file()
        assert len(list((out / "predictions" / variant / "val").glob("*_seg.nrrd"))) == 5
        assert json.loads((out / "predictions" / variant / "timing.json").read_text())["seconds_per_volume"] > 0


@pytest.mark.slow
def test_relabelled_list_scored_with_its_own_map(finished):
    """List b's ids 3,4 reach the cube and the scores as class 1, like list a's ids 1,2."""
    import h5py

    out = finished["out"]
    for cube in (out / "cubes").glob("*/cube.h5"):
        with h5py.File(cube) as handle:
            cases = handle["case_ids"].asstr()[()]
            labels = handle["labels"][()]
        assert set(np.unique(labels[cases == "b03"])) == {0, 1}
    rows = list(csv.DictReader((out / "predictions" / "2d-u1" / "val" / "metrics.csv").open()))
    b_truth = [int(r["truth_voxels"]) for r in rows if r["case"] == "b03" and r["class"] == "vertebra"]
    image, label = make_phantom(3, SHAPE)
    assert b_truth == [int((label > 0).sum())]


@pytest.mark.slow
def test_rerun_after_lost_step_runs_only_it(finished):
    folder, out = finished["folder"], finished["out"]
    step = "predict-3d-u1-fold1"
    marker = out / "steps" / f"{step}.done"
    cases = json.loads(marker.read_text())["rows"]
    marker.unlink()
    for case in {r["case"] for r in cases}:
        (out / "predictions" / "3d-u1" / "val" / f"{case}_seg.nrrd").unlink()
    before = mtimes(out)
    result = run_study(folder)
    assert result.returncode == 0, result.stderr
    assert "1 step(s) run, 11 already done" in result.stdout
    after = mtimes(out)
    changed = sorted(p for p in after if after[p] != before.get(p))
    allowed = ("steps/predict-3d-u1-fold1.done", "predictions/3d-u1/", "study.json", "report")
    assert all(p.startswith(allowed) for p in changed), changed
    assert all(after[p] == before[p] for p in before if p.startswith(("runs/", "cubes/", "predictions/2d-u1/")))


@pytest.mark.slow
def test_jobs_runs_steps_in_their_own_processes(finished):
    folder, out = finished["folder"], finished["out"]
    for step in ("predict-2d-u1-fold0", "predict-3d-u1-fold0"):
        (out / "steps" / f"{step}.done").unlink()
    result = run_study(folder, "--jobs", "2")
    assert result.returncode == 0, result.stderr
    assert "2 step(s) run" in result.stdout
    for step in ("predict-2d-u1-fold0", "predict-3d-u1-fold0"):
        assert (out / "logs" / f"{step}.log").is_file()
        assert (out / "steps" / f"{step}.done").is_file()
    listing = run_study(folder, "--list-steps")
    assert listing.stdout.count("pending") == 0 and listing.stdout.count("done") == 12


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "studies").glob("*.yaml")))
def test_shipped_study_files_are_valid(name):
    """Every study file in studies/ parses and checks (lists, variants, settings, cubes), without reading the
    volumes."""
    from spine_keras.study.config import StudyConfig

    config = StudyConfig.from_yaml(REPO / "studies" / f"{name}.yaml", check_data=False)
    assert config.folds >= 2 and config.variants
    for variant in config.variants:
        assert config.train_settings(variant, 0, Path("cube.h5"), Path("run")).keep == "last"
        for index in range(len(config.train_lists)):
            cube = config.cube_config(variant, index, Path("cube.h5"))
            assert (cube.preprocess.auto_crop_mm == 10) == variant.name.endswith("-crop")
