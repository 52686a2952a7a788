"""What instance prediction and the baseline write per case and per list: the level-id label map, the vertebra
table, and (where the truth is given) the instance scores, per vertebra and pooled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from spine_keras.instances.metrics import instance_scores
from spine_keras.instances.table import vertebra_rows, write_rows
from spine_keras.io import Volume, atomic_path, write_volume
from spine_keras.levels import LEVEL_IDS

SCORE_COLUMNS = ("case", "level", "matched_level", "dice", "assd_mm", "found", "identified", "level_dice")


def write_case(folder: Path, case_id: str, levels: Volume, complete=None, confidence=None) -> list[dict]:
    """`<case>_instances.nrrd` and `<case>_vertebrae.csv/.json` in `folder`; returns the table's rows."""
    write_volume(levels, folder / f"{case_id}_instances.nrrd")
    rows = vertebra_rows(levels, complete, confidence)
    write_rows(rows, folder / f"{case_id}_vertebrae")
    return rows


def score_case(case_id: str, levels: np.ndarray, truth: np.ndarray, spacing) -> dict:
    """Instance scores of one case, each vertebra row tagged with the case id."""
    scores = instance_scores(levels, truth, spacing)
    for row in scores["vertebrae"]:
        row["case"] = case_id
    return scores | {"case": case_id}


def pooled(cases: list[dict]) -> dict:
    """Scores over every vertebra of every case (not a mean of case means), plus the count of merged instances and
    the level Dice as a semantic study reports it: per level, the mean over the cases that hold it, and the mean of
    those per-level means."""
    rows = [row for case in cases for row in case["vertebrae"]]
    found = [r for r in rows if r["found"]]
    predicted = sum(case["summary"]["predicted"] for case in cases)
    positives = sum(len({r["matched_level"] for r in case["vertebrae"] if r["found"]}) for case in cases)
    assd = [r["assd_mm"] for r in found if r["assd_mm"] is not None]
    by_level: dict[str, list[float]] = {}
    for row in rows:
        by_level.setdefault(row["level"], []).append(row["level_dice"])
    per_level = {name: round(float(np.mean(by_level[name])), 4) for name in sorted(by_level, key=LEVEL_IDS.get)}
    return {
        "cases": len(cases),
        "vertebrae": len(rows),
        "mean_dice": round(float(np.mean([r["dice"] for r in rows])), 4) if rows else None,
        "mean_assd_mm": round(float(np.mean(assd)), 3) if assd else None,
        "precision": round(positives / predicted, 4) if predicted else None,
        "recall": round(len(found) / len(rows), 4) if rows else None,
        "identification": round(sum(r["identified"] for r in rows) / len(rows), 4) if rows else None,
        "merged": sum(case["summary"]["merged"] for case in cases),
        "level_dice": per_level,
        "mean_level_dice": round(float(np.mean(list(per_level.values()))), 4) if per_level else None,
    }


def write_scores(folder: Path, cases: list[dict], extra: dict | None = None) -> dict:
    """`scores.csv` (one row per true vertebra) and `scores.json` (per case and pooled); returns the pooled."""
    rows = [row for case in cases for row in case["vertebrae"]]
    write_rows(rows, folder / "scores", SCORE_COLUMNS)
    summary = pooled(cases) | (extra or {})
    with atomic_path(folder / "summary.json") as tmp:
        payload = {"pooled": summary, "cases": [{"case": c["case"], **c["summary"]} for c in cases]}
        tmp.write_text(json.dumps(payload, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return summary
