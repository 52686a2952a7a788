"""The study report on a hand-made results folder: two variants (2D, 3D), two folds, three validation cases.

Every number asserted below was computed by hand from the made-up inputs written here.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from spine_keras.bundle import ModelBundle
from spine_keras.cube.store import write_attrs
from spine_keras.io import Volume, read_volume, write_volume
from spine_keras.prepare import SamplingConfig
from spine_keras.preprocess import PreprocessConfig

CLASSES = ["background", "vertebra", "disc"]
CASES = ["case0", "case1", "case2"]
FOLD_OF = {"case0": "0", "case1": "1", "case2": "1"}
# variant -> case -> (vertebra Dice, disc Dice); per-case scores: 2d 0.85 0.65 0.85 (mean 0.7833), 3d 0.75 0.60 0.90
DICE = {
    "2d-u1": {"case0": (0.9, 0.8), "case1": (0.7, 0.6), "case2": (0.8, 0.9)},
    "3d-u1": {"case0": (0.8, 0.7), "case1": (0.6, 0.6), "case2": (0.9, 0.9)},
}
# variant -> fold -> (vertebra IoU, disc IoU); background IoU 0.99 everywhere
FOLD_IOU = {"2d-u1": [(0.80, 0.60), (0.90, 0.70)], "3d-u1": [(0.70, 0.50), (0.70, 0.70)]}
TRAIN_SECONDS = {"2d-u1": (10.0, 20.0), "3d-u1": (30.0, 50.0)}


def stand_in_wilcoxon(scores: dict, best: str | None = None) -> list[dict]:
    """Used only when spine_keras.study.stats is not written yet: the differences, no real test."""
    rows = []
    for other in sorted(set(scores) - {best}):
        shared = sorted(set(scores[best]) & set(scores[other]))
        diff = np.array([scores[best][c] - scores[other][c] for c in shared])
        rows.append(
            {
                "variant": best,
                "vs": other,
                "n": len(shared),
                "median_difference": float(np.median(diff)),
                "mean_difference": float(diff.mean()),
                "statistic": math.nan,
                "p_value": math.nan,
            }
        )
    return rows


@pytest.fixture
def wilcoxon(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        import spine_keras.study.stats  # noqa: F401
    except ImportError:
        module = types.ModuleType("spine_keras.study.stats")
        module.paired_wilcoxon = stand_in_wilcoxon
        monkeypatch.setitem(sys.modules, "spine_keras.study.stats", module)


def write_fold(folder: Path, variant: str, fold: int) -> None:
    mode = variant[:2]
    shape = (32, 32) if mode == "2d" else (16, 16, 16)
    vertebra, disc = FOLD_IOU[variant][fold]
    metrics = {
        "val_iou_background": 0.99,
        "val_iou_vertebra": vertebra,
        "val_iou_disc": disc,
        "val_miou": (0.99 + vertebra + disc) / 3,
        "val_miou_nobg": (vertebra + disc) / 2,
    }
    ModelBundle(
        arch="u1",
        input_shape=(*shape, 1),
        class_names=tuple(CLASSES),
        preprocess=PreprocessConfig(),
        sampling=SamplingConfig(mode=mode, shape=shape),
        metrics=metrics,
    ).write(folder)
    epochs = np.arange(4)
    rate = 0.1 if mode == "2d" else 0.05  # the two variants' curves differ, so the chart can be checked by eye
    rows = [[e, 1 - rate * e, 1.1 - rate * e, 0.5 + rate * e, 0.4 + rate * e + 0.05 * fold] for e in epochs]
    header = ["epoch", "loss", "val_loss", "val_miou", "val_miou_nobg"]
    with open(folder / "history.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    timing = {"train_seconds": TRAIN_SECONDS[variant][fold], "peak_rss_mb": 1000.0 + fold, "epochs": 4}
    (folder / "timing.json").write_text(json.dumps(timing))


def write_predictions(out: Path, variant: str, data: Path) -> None:
    folder = out / "predictions" / variant / "val"
    folder.mkdir(parents=True)
    rows = []
    for n, case in enumerate(CASES):
        vertebra, disc = DICE[variant][case]
        hd95 = "" if case == "case1" else 2.0 * (n + 1)  # case1: undefined, counted as missing
        rows.append([case, FOLD_OF[case], "background", 0.99, 0.98, 1.0, 0.5, 900, 900, 0.5])
        rows.append([case, FOLD_OF[case], "vertebra", vertebra, vertebra - 0.1, hd95, 1.0, 50, 50, 0.5])
        rows.append([case, FOLD_OF[case], "disc", disc, disc - 0.1, 3.0, 1.5, 20, 20, 0.5])
        truth = read_volume(data / f"{case}_label.nrrd")
        seg = truth.array.copy()
        seg[: 12 if variant.startswith("3d") else 14] = 0  # a visible miss
        seg[30:34, 2:6] = 1  # and a visible extra region
        write_volume(Volume(seg, truth.spacing, truth.origin, truth.direction), folder / f"{case}_seg.nrrd")
    header = "case,fold,class,dice,iou,hd95_mm,assd_mm,truth_voxels,predicted_voxels,seconds".split(",")
    with open(folder / "metrics.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    timing = {"seconds_per_volume": 0.5, "peak_rss_mb": 700}
    (out / "predictions" / variant / "timing.json").write_text(json.dumps(timing))


@pytest.fixture
def results(tmp_path: Path, make_pair, make_training_cube) -> Path:
    """A results folder as spine-study leaves it, built by hand."""
    data, out = tmp_path / "data", tmp_path / "study-fake"
    data.mkdir()
    pairs = [make_pair(data, case, shape=(40, 32, 12), spacing=(1.0, 1.0, 2.0), seed=i) for i, case in enumerate(CASES)]
    (data / "train.txt").write_text("".join(f"{i.name},{lab.name}\n" for i, lab in pairs))
    out.mkdir()
    study = {
        "name": "fake",
        "data": {"train": [{"list": str(data / "train.txt"), "label_map": None}], "test": None},
        "classes": CLASSES,
        "folds": 2,
        "hardware": {"cpu": "Test CPU", "cores": 2, "gpu": None, "memory_gb": 8},
        "source": str(tmp_path / "fake.yaml"),
        "versions": {"python": "3.11", "spine_keras": "0.1"},
    }
    (out / "study.json").write_text(json.dumps(study))
    for variant in DICE:
        for fold in (0, 1):
            folder = out / "runs" / variant / f"fold_{fold}"
            folder.mkdir(parents=True)
            write_fold(folder, variant, fold)
        write_predictions(out, variant, data)
    cube = out / "cubes" / "abc123" / "cube.h5"
    cube.parent.mkdir(parents=True)
    make_training_cube(cube, shape=(32, 32), cases=2, per_case=2, copies=1)
    import h5py

    with h5py.File(cube, "r+") as handle:
        write_attrs(handle, {"augment": {"copies": 1, "rotation": 15.0, "zoom": [0.8, 1.2], "flip_prob": 0.5}})
    return out


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_report_tables_and_figures(results: Path, wilcoxon: None) -> None:
    from spine_keras.study.report import write_report

    report = write_report(results)
    assert report == results / "report.md"
    folder = results / "report"

    iou = {row["row"]: row for row in read_rows(folder / "iou_folds.csv")}
    assert float(iou["vertebra"]["2d-u1"]) == pytest.approx(0.85)
    assert float(iou["vertebra"]["2d-u1_std"]) == pytest.approx(0.05)  # population std over the two folds
    assert float(iou["disc"]["3d-u1"]) == pytest.approx(0.60) and float(iou["disc"]["3d-u1_std"]) == pytest.approx(0.1)
    assert float(iou["mean IoU without background"]["2d-u1"]) == pytest.approx(0.75)  # (0.7 + 0.8) / 2
    assert float(iou["mean IoU with background"]["3d-u1"]) == pytest.approx((0.99 + 0.7 + 0.6) / 3)
    assert iou["vertebra"]["2d-u1_folds"] == "2"

    summary = {(r["variant"], r["class"], r["metric"]): r for r in read_rows(folder / "case_metrics.csv")}
    dice = summary[("2d-u1", "vertebra", "dice")]
    assert float(dice["mean"]) == pytest.approx(0.8) and float(dice["median"]) == pytest.approx(0.8)
    assert float(dice["worst"]) == pytest.approx(0.7) and dice["worst_case"] == "case1" and dice["missing"] == "0"
    hd95 = summary[("3d-u1", "vertebra", "hd95_mm")]
    assert hd95["missing"] == "1" and float(hd95["mean"]) == pytest.approx(4.0)  # (2 + 6) / 2, case1 undefined
    assert float(hd95["worst"]) == pytest.approx(6.0) and hd95["worst_case"] == "case2"
    assert not (folder / "case_metrics_by_list.csv").exists()  # one training list: nothing to split

    (test,) = read_rows(folder / "wilcoxon.csv")
    assert test["split"] == "val" and test["variant"] == "2d-u1" and test["vs"] == "3d-u1" and test["n"] == "3"
    assert float(test["median_difference"]) == pytest.approx(0.05)  # 0.10, 0.05, -0.05
    assert float(test["mean_difference"]) == pytest.approx(0.1 / 3)

    cost = {r["variant"]: r for r in read_rows(folder / "cost.csv")}
    assert float(cost["2d-u1"]["train_seconds_mean"]) == pytest.approx(15.0)
    assert float(cost["3d-u1"]["train_seconds_total"]) == pytest.approx(80.0)
    assert float(cost["3d-u1"]["seconds_per_volume"]) == pytest.approx(0.5)
    assert len(read_rows(folder / "train_time.csv")) == 4

    text = report.read_text()
    assert "best variant (highest mean per-case Dice without background): 2d-u1" in text
    assert "Test CPU (2 cores)" in text and f"spine-study {results.parent / 'fake.yaml'} -o {results}" in text
    assert "Versions: python 3.11, spine_keras 0.1." in text
    assert "0.8500 ± 0.0500" in text and "p >= 0.05: the difference may be noise" in text
    assert "not drawn" not in text
    for name in ("curves", "dice_boxes", "cases", "cube_montage", "augmentation"):
        png = folder / f"{name}.png"
        assert png.is_file() and png.stat().st_size > 1000, name
        assert f"(report/{name}.png)" in text


def test_report_scores_each_training_list_apart(results: Path, wilcoxon: None) -> None:
    """A study trained on two lists (e.g. two sequences) reports each list's held-out cases on their own."""
    from spine_keras.study.report import write_report

    study = json.loads((results / "study.json").read_text())
    data = Path(study["data"]["train"][0]["list"]).parent
    lines = (data / "train.txt").read_text().splitlines(keepends=True)
    (data / "t1.txt").write_text(lines[0])  # case0
    (data / "t2.txt").write_text("".join(lines[1:]))  # case1, case2
    study["data"]["train"] = [{"list": str(data / name), "label_map": None} for name in ("t1.txt", "t2.txt")]
    (results / "study.json").write_text(json.dumps(study))

    report = write_report(results)
    rows = read_rows(results / "report" / "case_metrics_by_list.csv")
    by = {(r["list"], r["variant"], r["class"], r["metric"]): r for r in rows}
    t2 = by[("t2.txt", "2d-u1", "vertebra", "dice")]
    assert t2["cases"] == "2" and float(t2["mean"]) == pytest.approx(0.75)  # 0.7 and 0.8
    assert float(t2["worst"]) == pytest.approx(0.7) and t2["worst_case"] == "case1"
    t1 = by[("t1.txt", "3d-u1", "disc", "dice")]
    assert t1["cases"] == "1" and float(t1["mean"]) == pytest.approx(0.7)
    assert {r["list"] for r in rows} == {"t1.txt", "t2.txt"}
    text = report.read_text()
    assert "training list t1.txt" in text and "training list t2.txt" in text

    (data / "t2.txt").unlink()  # a list moved since the study ran: the report is still written, and says why
    (results / "report" / "case_metrics_by_list.csv").unlink()
    text = write_report(results).read_text()
    assert "Not split by training list" in text and "t2.txt" in text
    assert not (results / "report" / "case_metrics_by_list.csv").exists()


def test_report_refuses_a_folder_without_study_json(tmp_path: Path) -> None:
    from spine_keras.errors import UserError
    from spine_keras.study.report import write_report

    with pytest.raises(UserError, match="not a study results folder"):
        write_report(tmp_path)
