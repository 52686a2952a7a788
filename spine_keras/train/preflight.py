"""Everything `spine-train` checks before it writes a file or imports TensorFlow.

`plan_run` validates the run folder, the cube (`check_cube`: layout, dtypes and attributes always; with the full
check also every value: NaN or infinite intensities, label ids >= n_classes other than the ignore id 255 (which
training leaves out of the loss and the metrics), unreadable chunks), each arch against
the cube's sample shape, the splits and the batch size, and for `--resume` the run folder itself: its config.json,
each job's state.json, last.keras and spine_keras.json, and that the cube still has the classes, sample shape and
mode the run started with. A refused run leaves the disk exactly as it was.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spine_keras.bundle import read_bundle
from spine_keras.cube.check import check_cube
from spine_keras.data import CubeInfo, Split, make_splits, open_cube
from spine_keras.destinations import check_folder
from spine_keras.errors import UserError
from spine_keras.models import ARCHS, preset
from spine_keras.models.config import make_config
from spine_keras.train.settings import CUBE_CHECKS, TrainSettings

if TYPE_CHECKING:
    from spine_keras.augment import AugmentConfig

STATE_NAME = "state.json"
CONFIG_NAME = "config.json"
# What `spine_keras.io.atomic_path` leaves when a save is killed: .<name>.<8 random characters>.tmp<suffix>
STALE_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[\w.]+)?$")


@dataclass
class Plan:
    """A checked run: its settings, cube, splits and online augmentation, and the folder it writes."""

    settings: TrainSettings
    cube: CubeInfo
    splits: list[Split]
    augment: AugmentConfig | None
    run_dir: Path
    resume: bool
    chief: bool


def is_chief() -> bool:
    """True unless TF_CONFIG names this process a non-chief worker (only the chief writes the run folder)."""
    try:
        config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    except ValueError as exc:
        raise UserError(f"TF_CONFIG is not valid JSON ({exc})") from exc
    task = config.get("task") or {}
    if task.get("type") in ("chief", None):
        return True
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0 and "chief" not in config.get("cluster", {})


def default_run_dir(archs: list[str], mode: str) -> Path:
    """runs/<arch>-<2d|3d>-<timestamp>; 'all' or the codes joined by '+' for comparisons."""
    name = "all" if len(archs) == len(ARCHS) else "+".join(archs)
    return Path("runs") / f"{name}-{mode}-{time.strftime('%Y%m%d-%H%M%S')}"


def job_folder(run_dir: Path, arch: str, split: Split, n_archs: int, n_splits: int) -> Path:
    """The bundle folder of one job inside the run folder."""
    folder = run_dir / arch if n_archs > 1 else run_dir
    return folder / split.name if n_splits > 1 or split.name.startswith("fold_") else folder


def plan_run(settings: TrainSettings, resume: bool = False, cube_check: str = "full") -> Plan:
    """Check every input of a run without writing anything or importing TensorFlow; UserError for the first problem."""
    if cube_check not in CUBE_CHECKS:
        raise UserError(f"--check-cube must be one of {', '.join(CUBE_CHECKS)}, got {cube_check!r}")
    chief = is_chief()
    if settings.out:
        check_run_folder(Path(settings.out), resume, chief)
    cube = checked_cube(settings.cube, full=cube_check == "full")
    for arch in settings.arch:
        make_config(arch, cube.input_shape, cube.n_classes, settings.model_overrides(preset(arch)))
    splits = make_splits(cube, settings.folds, settings.fold, settings.val_fraction, settings.seed)
    check_batch(settings.batch_for(cube.mode), splits, "--batch-size")
    augment = augment_config(settings, cube)
    run_dir = Path(settings.out) if settings.out else default_run_dir(settings.arch, cube.mode)
    if not settings.out:
        check_run_folder(run_dir, resume, chief)
    plan = Plan(settings, cube, splits, augment, run_dir, resume, chief)
    if resume:
        check_resumable(plan)
    return plan


def check_run_folder(run_dir: Path, resume: bool, chief: bool) -> None:
    """The run folder: no file in its place, writable, and (chief of a fresh run) empty."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out '{run_dir}' is a file; give a folder for the run")
    if chief and not resume and run_dir.is_dir() and any(run_dir.iterdir()):
        raise UserError(
            f"run folder '{run_dir}' already exists; continue it with --resume {run_dir} or choose another --out"
        )
    check_folder(run_dir, "run folder")


def checked_cube(path: str, full: bool) -> CubeInfo:
    """The cube after `check_cube` (with `full`, every value is read); UserError naming its first problem."""
    report = check_cube(path, scan=full)
    if report.problems:
        more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
        raise UserError(f"cube '{path}' cannot be trained on: {report.problems[0]}{more}; see spine-check-cube {path}")
    return open_cube(path)


def check_batch(global_batch: int, splits: list[Split], what: str) -> None:
    """UserError when a split has fewer training samples than one global batch."""
    for split in splits:
        if len(split.train) < global_batch:
            raise UserError(
                f"{what} {global_batch} is larger than the {len(split.train)} training samples of "
                f"{split.name}; lower --batch-size or use a larger cube"
            )


def augment_config(settings: TrainSettings, cube: CubeInfo) -> AugmentConfig | None:
    """Online augmentation settings: the config file's `augment`, else the cube's (its ranges), else the defaults.

    The recipe refuses to replay a `--preset paper` cube's heavy ranges on the fly: that combination is never what
    the recipe measured, and it would pass silently."""
    if not settings.online_augment:
        return None
    import dataclasses

    import numpy as np

    from spine_keras.augment import AugmentConfig, sample_params

    built_under = (cube.attrs.get("config") or {}).get("preset")
    if settings.augment is None and settings.preset == "recipe" and built_under == "paper":
        raise UserError(
            f"cube '{settings.cube}' holds the paper's augmentation ranges (flips, noise, blur), which the recipe "
            "would apply on the fly: rebuild the cube without --preset paper, or train with --preset paper "
            "(add --online-augment to augment on the fly) or --no-online-augment"
        )
    fields = {f.name for f in dataclasses.fields(AugmentConfig)}
    from_cube = {k: v for k, v in (cube.attrs.get("augment") or {}).items() if k in fields}  # not `copies`
    try:
        config = AugmentConfig.from_dict(settings.augment or from_cube)
        sample_params(config, cube.sample_shape, np.random.default_rng(0))  # axes the samples lack fail here
    except (TypeError, ValueError) as exc:
        raise UserError(f"bad augmentation settings for --online-augment: {exc}") from exc
    return config


def read_json_file(path: Path, what: str) -> dict[str, Any]:
    """A JSON mapping from a run folder; UserError naming the file when it is missing, unreadable or malformed."""
    if not path.is_file():
        raise UserError(f"cannot resume: {what} '{path}' is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"cannot resume: {what} '{path}' is unreadable or not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise UserError(f"cannot resume: {what} '{path}' does not hold a JSON mapping")
    return data


def run_settings(run_dir: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings saved in a run folder's config.json, and their origins (for messages naming the file)."""
    if not run_dir.is_dir() or not (run_dir / CONFIG_NAME).exists():
        raise UserError(f"'{run_dir}' is not a run folder (no config.json); give the folder a run was writing")
    config = read_json_file(run_dir / CONFIG_NAME, "the run's config")
    settings = config.get("settings")
    if not isinstance(settings, dict):
        raise UserError(f"cannot resume: '{run_dir / CONFIG_NAME}' has no 'settings' mapping")
    return settings, {str(k).replace("-", "_"): f"'{run_dir / CONFIG_NAME}'" for k in settings}


def check_resumable(plan: Plan) -> None:
    """The run folder can go on with this cube: same classes, sample shape and mode; each started job's files."""
    config = read_json_file(plan.run_dir / CONFIG_NAME, "the run's config")
    _check_same_cube(config, plan.cube, plan.run_dir / CONFIG_NAME)
    n_archs, n_splits = len(plan.settings.arch), len(plan.splits)
    for arch in plan.settings.arch:
        for split in plan.splits:
            _check_job(job_folder(plan.run_dir, arch, split, n_archs, n_splits), split)


def cube_identity(cube: CubeInfo) -> dict[str, Any]:
    """What a resumed run needs to be unchanged in its cube."""
    return {"mode": cube.mode, "class_names": cube.class_names, "sample_shape": list(cube.sample_shape)}


def _check_same_cube(config: dict[str, Any], cube: CubeInfo, where: Path) -> None:
    """UserError naming what differs between the cube recorded in config.json and the cube given now."""
    recorded = config.get("cube")
    attrs = recorded.get("attrs") if isinstance(recorded, dict) else None
    if not isinstance(attrs, dict):
        raise UserError(f"cannot resume: '{where}' does not record the cube it was trained on")
    sampling = attrs.get("sampling") if isinstance(attrs.get("sampling"), dict) else {}
    then = {
        "mode": attrs.get("mode", sampling.get("mode")),
        "class_names": attrs.get("class_names"),
        "sample_shape": recorded.get("sample_shape", sampling.get("shape")),
    }
    now = cube_identity(cube)
    for key, value in now.items():
        if then[key] is not None and then[key] != value:
            raise UserError(
                f"cannot resume: the cube's {key.replace('_', ' ')} changed from {then[key]} to {value} "
                f"since the run started (recorded in '{where}'); resume with the same cube or start a new run"
            )


def _check_job(folder: Path, split: Split) -> None:
    """A started job: state.json well formed, on the same split, with its last.keras; spine_keras.json readable."""
    state_path = folder / STATE_NAME
    if not state_path.exists():
        return
    state = read_json_file(state_path, "the saved state")
    expected = {"epoch": int, "completed": bool, "best_epoch": int, "callbacks": dict}
    for key, kind in expected.items():
        value = state.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise UserError(f"cannot resume: '{state_path}' has a bad or missing '{key}' ({state.get(key)!r})")
    try:
        float(state.get("best"))
    except (TypeError, ValueError):
        raise UserError(f"cannot resume: '{state_path}' has a bad or missing 'best' ({state.get('best')!r})") from None
    if state.get("split") not in (None, split.to_dict()):
        raise UserError(
            f"cannot resume {folder}: its split {split.name} changed (the cube's cases or the split settings "
            "differ from when it was started)"
        )
    if state["completed"] and not isinstance(state.get("result"), dict):
        raise UserError(f"cannot resume: '{state_path}' says completed but holds no 'result'")
    if not (folder / "last.keras").is_file():
        raise UserError(
            f"cannot resume: '{folder / 'last.keras'}' is missing (state.json is at epoch {state['epoch']})"
        )
    if (folder / "spine_keras.json").exists():
        read_bundle(folder)


def stale_temporaries(run_dir: Path) -> list[Path]:
    """Temporary files that a killed save left in the run folder (none are written outside a save)."""
    return [p for p in run_dir.rglob(".*") if p.is_file() and STALE_TEMPORARY.match(p.name)]
