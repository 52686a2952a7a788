"""Instance prediction for a list of volumes: the iterative network's traversal (or the connected-component
baseline), outputs on each input's grid, scores where the list gives the truth."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from spine_keras.instances.baseline import baseline_levels
from spine_keras.instances.cases import read_labelled
from spine_keras.instances.reference import Predict, segment_volume
from spine_keras.instances.report import score_case, write_case, write_scores
from spine_keras.io import ListEntry, Volume, read_volume


def segment(image: Volume, predict: Predict, metadata: dict) -> tuple[Volume, dict[int, float]]:
    """One volume -> (level-id instance map in its geometry, {level id: completeness probability})."""
    levels, completeness = segment_volume(image.array, image.spacing, predict, metadata)
    return Volume(levels, image.spacing, image.origin, image.direction), completeness


def predict_list(
    entries: list[ListEntry], predict: Predict, metadata: dict, out: Path, levels: list[str] | None
) -> dict | None:
    """Traverse every case into `out`; with labels and `levels`, score each and write the pooled scores."""
    return _run(entries, out, levels, lambda entry: _network_case(entry, predict, metadata))


def predict_held_out(
    entries: list[ListEntry], runs: list[tuple[str, Predict, dict]], routes: list[int], out: Path, levels: list[str]
) -> dict | None:
    """Cross-validated prediction: entry i traversed by run `routes[i]` (name, predict, metadata), every case into
    `out`, scored and pooled as one list; the pooled summary names the run that predicted each case."""
    by_case = {entry.case_id: runs[route] for entry, route in zip(entries, routes)}

    def one(entry: ListEntry):
        _, predict, metadata = by_case[entry.case_id]
        return _network_case(entry, predict, metadata)

    return _run(entries, out, levels, one, {"predicted_by": {case: run[0] for case, run in by_case.items()}})


def baseline_list(
    entries: list[ListEntry],
    out: Path,
    levels: list[str],
    anchor: str,
    vertebra_class: int,
    min_ml: float,
    min_fraction: float = 0.0,
) -> dict | None:
    """The baseline on every `mask,truth` line: the mask's `vertebra_class` voxels split into components (those
    under `min_ml` ml or `min_fraction` of the median component dropped)."""

    def one(entry: ListEntry):
        mask = read_volume(entry.image, entry.source)
        vertebra = np.asarray(mask.array) == vertebra_class
        ids = baseline_levels(vertebra, mask.spacing, levels, anchor, min_ml, min_fraction)
        return Volume(ids, mask.spacing, mask.origin, mask.direction), None, None

    return _run(entries, out, levels, one)


def _network_case(entry: ListEntry, predict: Predict, metadata: dict):
    levels, completeness = segment(read_volume(entry.image, entry.source), predict, metadata)
    return levels, {k: v >= 0.5 for k, v in completeness.items()}, completeness


def _run(
    entries: list[ListEntry], out: Path, levels: list[str] | None, one: Callable, extra: dict | None = None
) -> dict | None:
    """Run `one` on each entry, write its outputs, and score it where truth and levels are known; the pooled
    summary records the levels (which `figure` reads) and `extra`."""
    out.mkdir(parents=True, exist_ok=True)
    scored, seconds = [], []
    for entry in entries:
        started = time.perf_counter()
        predicted, complete, confidence = one(entry)
        seconds.append(time.perf_counter() - started)
        write_case(out, entry.case_id, predicted, complete, confidence)
        if entry.label is not None and levels:
            truth = read_labelled(entry, levels).levels
            scored.append(score_case(entry.case_id, predicted.array, truth, predicted.spacing))
    if not scored:
        return None
    recorded = {"seconds_per_case": round(float(np.mean(seconds)), 2), "levels": list(levels)}
    return write_scores(out, scored, recorded | (extra or {}))
