"""One row per vertebra of an instance label map: level, size, centroid in patient space, bounding box.

Written as CSV (for a spreadsheet) and JSON (for a program) side by side; numpy only.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from spine_keras.io import Volume, atomic_path
from spine_keras.levels import level_name

COLUMNS = (
    "level",
    "level_id",
    "voxels",
    "volume_ml",
    "centroid_x_mm",
    "centroid_y_mm",
    "centroid_z_mm",
    "bbox_start",
    "bbox_stop",
    "complete",
    "confidence",
)


def vertebra_rows(
    levels: Volume, complete: dict[int, bool] | None = None, confidence: dict[int, float] | None = None
) -> list[dict]:
    """A row per non-zero id of `levels` (an instance map whose ids are level ids), top level first.

    The centroid is the mean voxel position mapped to patient (LPS) space through origin, direction and spacing;
    the bounding box is the index range `[start, stop)` per array axis. `complete` and `confidence` (per level id,
    from the iterative network) are None where the method gives none."""
    array = np.asarray(levels.array)
    ids = [int(i) for i in np.unique(array) if i != 0]
    voxel_ml = float(np.prod(levels.spacing)) / 1000.0
    centres = ndimage.center_of_mass(np.ones(array.shape, np.uint8), array, ids) if ids else []
    boxes = ndimage.find_objects(array.astype(np.int32))
    counts = np.bincount(array.reshape(-1).astype(np.intp), minlength=max(ids, default=0) + 1)
    rows = []
    for level, centre in zip(ids, centres):
        point = np.asarray(levels.origin) + np.asarray(levels.direction) @ (np.asarray(centre) * levels.spacing)
        box = boxes[level - 1]
        rows.append(
            {
                "level": level_name(level),
                "level_id": level,
                "voxels": int(counts[level]),
                "volume_ml": round(float(counts[level]) * voxel_ml, 3),
                "centroid_x_mm": round(float(point[0]), 2),
                "centroid_y_mm": round(float(point[1]), 2),
                "centroid_z_mm": round(float(point[2]), 2),
                "bbox_start": [int(s.start) for s in box],
                "bbox_stop": [int(s.stop) for s in box],
                "complete": None if complete is None else bool(complete.get(level, False)),
                "confidence": None if confidence is None else _finite(confidence.get(level)),
            }
        )
    return rows


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 4)


def write_rows(rows: Sequence[dict], stem: Path | str, columns: Sequence[str] = COLUMNS) -> tuple[Path, Path]:
    """Write `rows` to `<stem>.csv` and `<stem>.json`, atomically; returns both paths."""
    stem = Path(stem)
    csv_path, json_path = stem.with_name(stem.name + ".csv"), stem.with_name(stem.name + ".json")
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in columns})
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(list(rows), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return csv_path, json_path


def _cell(value: object) -> object:
    """A CSV cell: lists as space-separated numbers, None empty."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    return value
