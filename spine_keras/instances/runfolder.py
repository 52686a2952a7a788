"""A spine-instances run folder: `model.keras` (the network) and `instances.json` (everything the traversal needs:
isotropic spacing, patch, thresholds, levels and anchor, the level scheme; plus the settings, training cases, split
and history).
No TensorFlow here, so commands check a run folder before TensorFlow starts."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

from spine_keras.errors import UserError
from spine_keras.instances.config import InstanceConfig
from spine_keras.instances.folds import split_record
from spine_keras.io import atomic_path
from spine_keras.levels import LEVEL_IDS, parse_levels

MODEL_NAME = "model.keras"
METADATA_NAME = "instances.json"
FORMAT = "spine_keras.instances/1"


def run_metadata(
    config: InstanceConfig,
    levels: list[str],
    anchor: str,
    case_ids: list[str],
    history: dict,
    split: dict | None = None,
) -> dict:
    """What a run folder and an export record beside the network: everything the traversal needs, and provenance:
    the training cases and the split (`folds.split_record`: folds, fold and the held-out case ids)."""
    return {
        "format": FORMAT,
        "spacing_mm": config.spacing_mm,
        "patch": list(config.patch),
        "traversal": config.traversal(),
        "levels": list(levels),
        "anchor": anchor,
        "level_scheme": dict(LEVEL_IDS),
        "config": config.to_dict(),
        "cases": list(case_ids),
        **(split or split_record(None, None, [])),
        "history": history,
        "versions": {name: version(name) for name in ("tensorflow", "keras", "numpy", "SimpleITK")},
    }


def write_run(folder: Path, model, metadata: dict) -> Path:
    """Write `model.keras` and `instances.json` into `folder` (created), each atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / MODEL_NAME) as tmp:
        model.save(tmp)
    with atomic_path(folder / METADATA_NAME) as tmp:
        tmp.write_text(json.dumps(metadata, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return folder


def read_metadata(folder: Path) -> dict:
    """The `instances.json` of a run or export folder (UserError when missing or unreadable)."""
    path = folder / METADATA_NAME
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"'{folder}' is no spine-instances run: cannot read {path.name} ({exc})") from exc
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise UserError(f"'{path}' is not a spine-instances metadata file (format spine_keras.instances/1)")
    _check_fields(metadata, path)
    return metadata


def _check_fields(metadata: dict, path: Path) -> None:
    """UserError naming the field when what the traversal reads is invalid or contradicts the recorded settings
    (a file edited by hand): the settings, the fields derived from them, the levels and the anchor."""
    try:
        config = InstanceConfig.from_dict(metadata.get("config") or {})
    except (UserError, TypeError, ValueError) as exc:
        raise UserError(f"'{path}': field 'config' is invalid ({exc})") from exc
    derived = {"spacing_mm": config.spacing_mm, "patch": list(config.patch), "traversal": config.traversal()}
    for key, value in (derived | {"level_scheme": dict(LEVEL_IDS)}).items():
        if metadata.get(key) != value:
            raise UserError(f"'{path}': field '{key}' disagrees with the run's settings; restore the file")
    levels = metadata.get("levels")
    named = isinstance(levels, list) and levels and all(isinstance(name, str) for name in levels)
    try:
        ordered = named and parse_levels(",".join(levels)) == levels
    except UserError:
        ordered = False
    if not ordered:
        raise UserError(f"'{path}': field 'levels' must list level names top to bottom, got {levels!r}")
    held_out = metadata.get("held_out", [])
    if not isinstance(held_out, list) or not all(isinstance(case, str) for case in held_out):
        raise UserError(f"'{path}': field 'held_out' must list case ids, got {held_out!r}")
    if metadata.get("anchor") not in ("bottom", "top"):
        raise UserError(f"'{path}': field 'anchor' must be 'bottom' or 'top', got {metadata.get('anchor')!r}")
