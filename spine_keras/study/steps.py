"""What each kind of study step does: build a cube, train one fold, predict validation cases or the test list.

Each `<kind>_step(plan, out, step)` writes its outputs under OUT and returns what its marker records.
Several training lists (each with its own label map) become one cube: each list is built into a part cube with its
own map, and the parts are merged, sample for sample, into `cube.h5` (its `label_map` attribute is then null and
`config.sources` records each part's settings). Predictions read each list's volumes in their original geometry
and score them against that list's ground truth mapped with that list's own label map.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from spine_keras.bundle import read_bundle, write_json
from spine_keras.destinations import disk_errors
from spine_keras.errors import CaseError, UserError
from spine_keras.io import ListEntry, parse_list
from spine_keras.study.plan import Step, StudyPlan, training_cases


def cube_path(out: Path, cube_key: str) -> Path:
    return out / "cubes" / cube_key / "cube.h5"


def cube_step(plan: StudyPlan, out: Path, step: Step) -> dict[str, Any]:
    """Build the cube of `step.cube` from every training list (merged when there are several), from scratch."""
    from spine_keras.cube.build import build_cube

    config = plan.config
    variant = next(v for v in config.variants if config.cube_key(v) == step.cube)
    target = cube_path(out, step.cube)
    shutil.rmtree(target.parent, ignore_errors=True)
    with disk_errors(target.parent, "the cube folder"):
        target.parent.mkdir(parents=True)
    lists = config.train_lists
    parts = [target] if len(lists) == 1 else [target.with_name(f"part_{i}.h5") for i in range(len(lists))]
    for index, part in enumerate(parts):
        build_cube(config.cube_config(variant, index, part), progress=False)
    if len(parts) > 1:
        merge_cubes(parts, target)
        for part in parts:
            part.unlink()
    return {"samples": _check_cube_cases(plan, target)}


def _check_cube_cases(plan: StudyPlan, cube: Path) -> int:
    """The cube's sample count; UserError when it lost a training case (the folds need every one)."""
    from spine_keras.data import open_cube

    info = open_cube(cube)
    missing = sorted(set(training_cases(plan.config)) - set(info.case_ids))
    if missing:
        raise UserError(
            f"cube '{cube}' has no sample of case(s) {', '.join(missing[:5])} (lower the cube's min_foreground?); "
            "every variant must see every training case for the folds to be shared"
        )
    return len(info.case_ids)


def merge_cubes(parts: list[Path], target: Path) -> None:
    """Write the samples of `parts` (same shape and classes, distinct cases) into one cube, atomically."""
    import h5py

    from spine_keras.cube.store import CubeWriter, read_attrs, write_attrs
    from spine_keras.io import atomic_path

    attrs = [read_attrs(p) for p in parts]
    merged = dict(attrs[0])
    merged.update(
        label_map=None,
        source_list=", ".join(a["source_list"] for a in attrs),
        skipped=[s for a in attrs for s in a.get("skipped") or []],
        config={"sources": [a.get("config") for a in attrs]},
    )
    with disk_errors(target, "cube"), atomic_path(target) as tmp, h5py.File(tmp, "w") as handle:
        channels = 2 * int(merged["sampling"].get("context", 0)) + 1  # 2.5D neighbours as channels
        writer = CubeWriter(handle, tuple(merged["sampling"]["shape"]), channels)
        for part in parts:
            _copy_samples(part, writer)
        write_attrs(handle, merged)


def _copy_samples(part: Path, writer: Any) -> None:
    """Append every case of cube `part` to `writer`, one case (a contiguous run of samples) at a time."""
    import h5py

    with h5py.File(part, "r") as source:
        case_ids = source["case_ids"].asstr()[()]
        starts = [0, *np.flatnonzero(case_ids[1:] != case_ids[:-1]) + 1, len(case_ids)]
        for begin, end in zip(starts[:-1], starts[1:]):
            window = slice(int(begin), int(end))
            writer.append(
                source["images"][window],
                source["labels"][window],
                str(case_ids[begin]),
                source["augmented"][window],
                source["positions"][window],
            )


def train_step(plan: StudyPlan, out: Path, step: Step) -> dict[str, Any]:
    """Train one variant on one fold into OUT/runs/<variant>/fold_<k> (from scratch, through a hidden work folder),
    on the study's folds; writes timing.json beside the bundle."""
    from spine_keras.data import case_split
    from spine_keras.train.preflight import plan_run
    from spine_keras.train.run import run_plan

    variant, k = plan.variant(step.variant), int(step.fold)
    runs = out / "runs" / variant.name
    final, work = runs / f"fold_{k}", runs / f".fold_{k}.partial"
    for stale in (final, work):
        shutil.rmtree(stale, ignore_errors=True)
    settings = plan.config.train_settings(variant, k, cube_path(out, step.cube), work)
    train_plan = plan_run(settings, cube_check="quick")
    train_plan.splits = [case_split(train_plan.cube, f"fold_{k}", plan.fold_cases[k])]
    start = time.perf_counter()
    run_plan(train_plan)
    seconds = time.perf_counter() - start
    os.replace(work / f"fold_{k}", final)
    shutil.rmtree(work)
    val_cases = list(read_bundle(final).provenance.val_cases)
    assert val_cases == sorted(plan.fold_cases[k]), f"{step.id}: validated on {val_cases}, not the study's fold"
    timing = {"train_seconds": seconds, "peak_rss_mb": _peak_rss_mb(), "epochs": _epochs(final / "history.csv")}
    write_json(timing, final / "timing.json")
    _release_models()
    return {"val_cases": val_cases, **timing}


def _epochs(history: Path) -> int:
    """Epochs trained: the data rows of history.csv."""
    lines = history.read_text(encoding="utf-8").splitlines() if history.is_file() else []
    return max(len([line for line in lines if line.strip()]) - 1, 0)


def _peak_rss_mb() -> float:
    from spine_keras.study.run import peak_rss_mb

    return peak_rss_mb()


def _release_models() -> None:
    """Free the Keras graph state of a finished step (the next step of this process starts clean)."""
    import keras

    keras.backend.clear_session()


def predict_step(plan: StudyPlan, out: Path, step: Step) -> dict[str, Any]:
    """Predict the validation cases of one fold with that fold's model, in their original geometry, and score them."""
    from spine_keras.predict import load_segmenter

    folder = out / "runs" / step.variant / f"fold_{step.fold}"
    sources = training_sources(plan)
    cases = [sources[case] for case in read_bundle(folder).provenance.val_cases]
    segmenter = load_segmenter(folder)
    result = predict_cases(plan, segmenter, cases, out / "predictions" / step.variant / "val", str(step.fold))
    _release_models()
    return result


def test_step(plan: StudyPlan, out: Path, step: Step) -> dict[str, Any]:
    """Predict the test list with the mean of every fold's model (the fold ensemble), and score it."""
    from spine_keras.predict import Segmenter, load_segmenter

    folds = [load_segmenter(out / "runs" / step.variant / f"fold_{k}") for k in range(plan.config.folds)]
    ensemble = Segmenter(folds[0].bundle, [fn for fold in folds for fn in fold.fns])
    test = plan.config.test
    cases = [(entry, test.label_map) for entry in parse_list(test.list)]
    result = predict_cases(plan, ensemble, cases, out / "predictions" / step.variant / "test", "ensemble")
    _release_models()
    return result


def training_sources(plan: StudyPlan) -> dict[str, tuple[ListEntry, str | None]]:
    """Every training case id -> its list entry and its list's label map."""
    return {
        entry.case_id: (entry, source.label_map)
        for source in plan.config.train_lists
        for entry in parse_list(source.list)
    }


def predict_cases(
    plan: StudyPlan, segmenter: Any, cases: list[tuple[ListEntry, str | None]], folder: Path, fold: str
) -> dict[str, Any]:
    """Segment each case, write <case>_seg.nrrd into `folder`, score it; the marker's rows and seconds."""
    segmenter.load()  # loading is not inference time
    rows: list[dict[str, Any]] = []
    seconds: list[float] = []
    for entry, label_map in cases:
        case_rows, elapsed = predict_case(plan.config.classes, segmenter, entry, label_map, folder)
        rows.extend({"fold": fold, **row} for row in case_rows)
        seconds.append(elapsed)
    return {"rows": rows, "volume_seconds": seconds}


def predict_case(
    classes: list[str], segmenter: Any, entry: ListEntry, label_map: str | None, folder: Path
) -> tuple[list[dict[str, Any]], float]:
    """One case: predicted in its original geometry, written, scored per class (foreground classes, then
    background) against its ground truth mapped with its list's label map; returns the rows and the seconds."""
    from spine_keras.io import read_volume, write_volume
    from spine_keras.predict import predict_volume
    from spine_keras.preprocess import LabelMap, ignore_above_labels
    from spine_keras.surface import surface_metrics

    volume = read_volume(entry.image, entry.source)
    start = time.perf_counter()
    prediction = predict_volume(volume, segmenter)
    elapsed = time.perf_counter() - start
    with disk_errors(folder, "the predictions folder"):
        folder.mkdir(parents=True, exist_ok=True)
        write_volume(prediction.labels, folder / f"{entry.case_id}_seg.nrrd")
    truth_volume = read_volume(entry.label, entry.source)
    if truth_volume.shape != volume.shape:
        raise CaseError(f"{entry.source}: label shape {truth_volume.shape} differs from image shape {volume.shape}")
    truth = LabelMap.parse(label_map).apply(truth_volume.array, len(classes))
    if segmenter.bundle.preprocess.ignore_above_labels:  # not annotated above the top label: not scored there
        truth = ignore_above_labels(truth)
    scores = surface_metrics(prediction.labels.array, truth, truth_volume.spacing, len(classes))
    order = [*range(1, len(classes)), 0]
    rows = [{"case": entry.case_id, "class": classes[c], **scores[c], "seconds": elapsed} for c in order]
    return rows, elapsed
