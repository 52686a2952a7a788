"""Cross-validated instance segmentation: patient-grouped folds shared with the rest of the project, training that
never sees its fold's cases, held-out prediction routed case by case, the baseline's image-side case ids, and the
level figure."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from spine_keras.cli.instances import main
from spine_keras.data import case_folds
from spine_keras.errors import UserError
from spine_keras.instances.cases import mask_case_ids
from spine_keras.instances.config import InstanceConfig
from spine_keras.instances.figure import level_colour, pick_cases
from spine_keras.instances.folds import held_out_cases, route_held_out
from spine_keras.io import ListEntry, Volume, parse_list, read_volume, write_volume
from spine_keras.levels import LEVEL_IDS

CASES = [f"VB3_{i:02d}" for i in range(1, 16)]


def test_folds_are_the_projects_patient_grouped_folds() -> None:
    from spine_keras.study.plan import study_folds

    shuffled = list(np.random.default_rng(1).permutation(CASES))  # list order does not matter
    held = [held_out_cases(shuffled, 3, k, seed=7) for k in range(3)]
    assert held == case_folds(np.asarray(sorted(CASES), dtype=object), 3, 7) == study_folds(CASES, 3, 7)
    assert sorted(sum(held, [])) == CASES and [len(h) for h in held] == [5, 5, 5]
    assert held != [held_out_cases(CASES, 3, k, seed=8) for k in range(3)]  # the seed decides
    with pytest.raises(UserError, match="--fold 3 is out of range for --folds 3"):
        held_out_cases(CASES, 3, 3, seed=0)
    with pytest.raises(UserError, match="the list has 2 case"):
        held_out_cases(["a", "b"], 3, 0, seed=0)


def entry(case: str) -> ListEntry:
    return ListEntry(f"list.txt line {case}", Path(f"{case}_image.nrrd"), None, case)


def test_route_held_out_and_its_refusals() -> None:
    runs = [("run0", {"held_out": ["a", "c"]}), ("run1", {"held_out": ["b"]})]
    assert route_held_out([entry("a"), entry("b"), entry("c")], runs) == [0, 1, 0]
    with pytest.raises(UserError, match="case d is held out by none of the runs"):
        route_held_out([entry("a"), entry("d")], runs)
    twice = runs + [("run2", {"held_out": ["b"]})]
    with pytest.raises(UserError, match=r"case b is held out by 2 runs \(run1, run2\)"):
        route_held_out([entry("b")], twice)
    with pytest.raises(UserError, match="run 'all' held no case out"):
        route_held_out([entry("a")], runs + [("all", {"held_out": []})])


def test_baseline_cases_take_the_image_side_id() -> None:
    names = ["VB3_01_seg", "VB3_02_label", "p2_mask", "x_seg", "x_pred", "plain"]
    renamed = [e.case_id for e in mask_case_ids([entry(n) for n in names])]
    assert renamed == ["VB3_01", "VB3_02", "p2", "x_seg", "x_pred", "plain"]  # x_seg and x_pred would clash


def image_list(folder: Path, instance_masks, copies: int = 2) -> Path:
    """`image,label` lines for the two conftest phantoms and `copies` more cases copied from them (q0, q1, ...)."""
    instance_masks(folder)
    lines = ["p2_image.nrrd,p2_label.nrrd", "p3_image.nrrd,p3_label.nrrd"]
    for index in range(copies):
        source = ("p2", "p3")[index % 2]
        for kind in ("image", "label"):
            shutil.copy(folder / f"{source}_{kind}.nrrd", folder / f"q{index}_{kind}.nrrd")
        lines.append(f"q{index}_image.nrrd,q{index}_label.nrrd")
    path = folder / "images.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_train_with_folds_never_sees_its_held_out_cases(tmp_path: Path, instance_masks, monkeypatch) -> None:
    from spine_keras.instances import fit

    listed = image_list(tmp_path, instance_masks)
    seen: set[str] = set()
    draw = fit.step_arrays

    def spy(cases, config, index):
        seen.update(case.case_id for case in cases)
        return draw(cases, config, index)

    monkeypatch.setattr(fit, "step_arrays", spy)
    tiny = ["--spacing-mm", "4", "--patch", "16,16,16", "--filters", "2", "--depth", "2", "--steps", "1"]
    run = tmp_path / "run"
    flags = ["--folds", "2", "--fold", "1", "--seed", "3", "--epochs", "1", "--batch", "1", "--out", str(run)]
    assert main(["train", str(listed), "--levels", "L3-L5", *tiny, *flags]) == 0
    metadata = json.loads((run / "instances.json").read_text())
    ids = [e.case_id for e in parse_list(listed)]
    held = held_out_cases(ids, 2, 1, seed=3)
    assert (metadata["folds"], metadata["fold"], metadata["held_out"]) == (2, 1, held) and len(held) == 2
    assert sorted(metadata["cases"]) == sorted(set(ids) - set(held))
    assert seen and seen == set(metadata["cases"])  # the sampler drew from the training cases only


def test_train_refuses_half_a_split(tmp_path: Path, instance_masks, capsys: pytest.CaptureFixture) -> None:
    listed = image_list(tmp_path, instance_masks, copies=0)
    out = tmp_path / "run"
    assert main(["train", str(listed), "--levels", "L3-L5", "--folds", "2", "--out", str(out)]) == 2
    assert "--folds and --fold go together" in capsys.readouterr().err and not out.exists()
    assert main(["train", str(listed), "--levels", "L3-L5", "--folds", "3", "--fold", "0", "--out", str(out)]) == 2
    assert "the list has 2 case(s)" in capsys.readouterr().err and not out.exists()


def fold_runs(folder: Path, hand_set_instance_run, held: list[list[str]]) -> list[Path]:
    """Hand-set runs, one per fold, whose instances.json holds out `held[k]` (as train --folds writes it)."""
    runs = []
    for fold, cases in enumerate(held):
        run = hand_set_instance_run(folder / f"run{fold}")
        path = run / "instances.json"
        metadata = json.loads(path.read_text()) | {"folds": len(held), "fold": fold, "held_out": cases}
        path.write_text(json.dumps(metadata))
        runs.append(run)
    return runs


def test_predict_held_out_routes_each_case_to_its_run(tmp_path: Path, instance_masks, hand_set_instance_run) -> None:
    listed = image_list(tmp_path, instance_masks, copies=0)
    runs = fold_runs(tmp_path, hand_set_instance_run, [["p3"], ["p2"]])
    blind = json.loads((runs[0] / "instances.json").read_text())  # run 0 accepts no vertebra under 10 litres
    blind["config"]["min_ml"] = 10_000.0
    blind["traversal"] = InstanceConfig.from_dict(blind["config"]).traversal()
    (runs[0] / "instances.json").write_text(json.dumps(blind))
    out = tmp_path / "cv"
    assert main(["predict", *map(str, runs), str(listed), "--held-out", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pooled"]["predicted_by"] == {"p2": str(runs[1]), "p3": str(runs[0])}
    assert summary["pooled"]["cases"] == 2 and summary["pooled"]["levels"] == ["L3", "L4", "L5"]
    (p2, p3) = summary["cases"]
    assert (p2["case"], p3["case"], p3["predicted"]) == ("p2", "p3", 0) and p2["predicted"] >= 2  # p3: the blind run
    assert len((out / "scores.csv").read_text().splitlines()) == 1 + 6
    assert not read_volume(out / "p3_instances.nrrd").array.any()
    assert read_volume(out / "p2_instances.nrrd").shape == (96, 64, 40)


def test_predict_held_out_refuses_missing_and_ambiguous_cases(
    tmp_path: Path, instance_masks, hand_set_instance_run, capsys: pytest.CaptureFixture
) -> None:
    listed = image_list(tmp_path, instance_masks, copies=0)
    out = tmp_path / "cv"
    missing = fold_runs(tmp_path / "a", hand_set_instance_run, [["p3"], ["q9"]])
    assert main(["predict", *map(str, missing), str(listed), "--held-out", "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "case p2 is held out by none of the runs" in error
    assert len(error.splitlines()) == 1 and not out.exists()
    twice = fold_runs(tmp_path / "b", hand_set_instance_run, [["p2", "p3"], ["p3"]])
    assert main(["predict", *map(str, twice), str(listed), "--held-out", "--out", str(out)]) == 2
    assert "case p3 is held out by 2 runs" in capsys.readouterr().err and not out.exists()
    assert main(["predict", *map(str, twice), str(listed), "--out", str(out)]) == 2
    assert "2 run folders given; give one, or one per fold with --held-out" in capsys.readouterr().err
    assert not out.exists()


def baseline_with_three_scores(folder: Path, instance_masks) -> tuple[Path, Path]:
    """A baseline output of three phantom cases, p4 (p2 with its lowest vertebra missing from the mask) the worst,
    and the `image,label` list of the same cases."""
    instance_masks(folder)
    for kind in ("image", "label"):
        shutil.copy(folder / f"p2_{kind}.nrrd", folder / f"p4_{kind}.nrrd")
    mask = read_volume(folder / "p2_mask.nrrd")
    truth = read_volume(folder / "p2_label.nrrd").array
    lowest = max(range(1, 4), key=lambda i: np.nonzero(truth == i)[0].mean())
    write_volume(
        Volume(np.where(truth == lowest, 0, mask.array).astype(np.uint8), mask.spacing, mask.origin, mask.direction),
        folder / "p4_seg.nrrd",
    )
    masks = folder / "masks.txt"
    masks.write_text(masks.read_text() + "p4_seg.nrrd,p4_label.nrrd\n")
    images = folder / "images.txt"
    images.write_text("".join(f"p{i}_image.nrrd,p{i}_label.nrrd\n" for i in (2, 3, 4)))
    assert main(["baseline", str(masks), "--levels", "L3-L5", "--out", str(folder / "baseline")]) == 0
    return folder / "baseline", images


def test_pick_cases() -> None:
    assert pick_cases({"a": 0.9, "b": 0.5, "c": 0.7, "d": 0.8}) == [("best", "a"), ("median", "c"), ("worst", "b")]
    assert pick_cases({"a": 0.9, "b": 0.5}) == [("best", "a"), ("worst", "b")]
    assert pick_cases({"a": 0.9}) == [("best", "a")]


def test_level_figure_of_a_baseline(tmp_path: Path, instance_masks, capsys: pytest.CaptureFixture) -> None:
    import matplotlib.image

    from spine_keras.instances.figure import level_figure

    out, images = baseline_with_three_scores(tmp_path, instance_masks)
    assert (out / "p4_instances.nrrd").is_file()  # the mask p4_seg.nrrd names case p4, as the image does
    scores = {c["case"]: c["mean_dice"] for c in json.loads((out / "summary.json").read_text())["cases"]}
    assert scores["p2"] == scores["p3"] == 1.0 and scores["p4"] == pytest.approx(2 / 3, abs=1e-4)  # one missed
    png = tmp_path / "levels.png"
    rows = level_figure(out, parse_list(images), ["L3", "L4", "L5"], png)
    assert [(r.role, r.case) for r in rows] == [("best", "p3"), ("median", "p2"), ("worst", "p4")]
    truth = read_volume(tmp_path / "p3_label.nrrd").array
    assert rows[0].slice_index == int(np.argmax(np.count_nonzero(truth, axis=(0, 1))))
    pixels = (matplotlib.image.imread(png)[..., :3] * 255).round()
    assert png.stat().st_size < 300_000 and pixels.shape[0] > pixels.shape[1]  # three rows of two panels
    for level, present in (("L3", True), ("L4", True), ("L5", True), ("L1", False)):
        colour = np.array([int(level_colour(LEVEL_IDS[level])[i : i + 2], 16) for i in (1, 3, 5)])
        assert bool(np.any(np.all(np.abs(pixels - colour) <= 2, axis=-1))) == present, level
    assert main(["figure", str(out), str(images), "--out", str(png)]) == 2  # exists: --force
    assert "--force" in capsys.readouterr().err
    assert main(["figure", str(out), str(images), "--out", str(png), "--force"]) == 0
    assert "best p3 (mean Dice 1.000), median p2 (mean Dice 1.000), worst p4" in capsys.readouterr().out


def test_nine_neighbouring_levels_have_nine_colours() -> None:
    """T10..S1 (a lumbar view with the vertebra above and the sacrum below its labels), and any other nine
    neighbours, get nine different colours; T11..L5 keep the colours of the figures already drawn."""
    for first in range(1, LEVEL_IDS["S1"] - 7):
        assert len({level_colour(i) for i in range(first, first + 9)}) == 9
    kept = ["#f58231", "#42d4f4", "#f032e6", "#e6194b", "#3cb44b", "#4363d8", "#ffe119"]
    assert [level_colour(LEVEL_IDS[n]) for n in ("T11", "T12", "L1", "L2", "L3", "L4", "L5")] == kept


def test_figure_refuses_a_folder_without_scores_and_a_foreign_list(
    tmp_path: Path, instance_masks, capsys: pytest.CaptureFixture
) -> None:
    out, images = baseline_with_three_scores(tmp_path, instance_masks)
    png = tmp_path / "levels.png"
    assert main(["figure", str(tmp_path), str(images), "--out", str(png)]) == 2
    assert "holds no readable summary.json" in capsys.readouterr().err and not png.exists()
    images.write_text("p2_image.nrrd,p2_label.nrrd\n")
    assert main(["figure", str(out), str(images), "--out", str(png)]) == 2
    assert "case p3 of" in capsys.readouterr().err and not png.exists()
