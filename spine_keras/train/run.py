"""A training run: check every input, then train each arch on each split, then write the summaries.

Layout of the run folder: one arch on one split is itself a bundle; several folds give `fold_<i>/` bundles
plus `folds.csv|md`; several archs give `<arch>/` folders (each as above) plus `comparison.md|csv|png`.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spine_keras.augment import AugmentConfig
from spine_keras.bundle import versions, write_json
from spine_keras.data import CubeInfo, Split, make_splits, open_cube
from spine_keras.errors import UserError
from spine_keras.models import ARCHS, preset
from spine_keras.models.config import make_config
from spine_keras.train.callbacks import MONITOR
from spine_keras.train.compare import write_comparison, write_fold_summary
from spine_keras.train.job import Context, train_job
from spine_keras.train.settings import TrainSettings
from spine_keras.train.strategy import dtype_policy, is_chief, make_strategy, precision_policy


@dataclass
class RunResult:
    """Where a run wrote its bundles and their best validation metrics, per arch then per split."""

    run_dir: Path
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def best_bundle(self) -> Path:
        """The bundle folder with the highest best-epoch `val_miou_nobg` (NaN counts as lowest)."""
        jobs = [r for rs in self.results.values() for r in rs]
        score = [float(r["metrics"].get(MONITOR, float("nan"))) for r in jobs]
        return Path(jobs[max(range(len(jobs)), key=lambda i: (score[i] == score[i], score[i]))]["folder"])


def default_run_dir(archs: list[str], mode: str) -> Path:
    """runs/<arch>-<2d|3d>-<timestamp>; 'all' or the codes joined by '+' for comparisons."""
    name = "all" if len(archs) == len(ARCHS) else "+".join(archs)
    return Path("runs") / f"{name}-{mode}-{time.strftime('%Y%m%d-%H%M%S')}"


def job_folder(run_dir: Path, arch: str, split: Split, n_archs: int, n_splits: int) -> Path:
    """The bundle folder of one job inside the run folder."""
    folder = run_dir / arch if n_archs > 1 else run_dir
    return folder / split.name if n_splits > 1 or split.name.startswith("fold_") else folder


def _augment_config(settings: TrainSettings, cube: CubeInfo) -> AugmentConfig | None:
    """Online augmentation settings: the config file's `augment`, else the cube's (its ranges), else the defaults."""
    if not settings.online_augment:
        return None
    fields = {f.name for f in dataclasses.fields(AugmentConfig)}
    from_cube = {k: v for k, v in (cube.attrs.get("augment") or {}).items() if k in fields}  # not `copies`
    try:
        return AugmentConfig.from_dict(settings.augment or from_cube)
    except (TypeError, ValueError) as exc:
        raise UserError(f"bad augmentation settings for --online-augment: {exc}") from exc


def _check_inputs(settings: TrainSettings) -> tuple[CubeInfo, list[Split]]:
    """Every check that needs no TensorFlow: the cube, each arch for its shape, the splits, the batch size."""
    cube = open_cube(settings.cube)
    for arch in settings.arch:
        make_config(arch, cube.input_shape, cube.n_classes, settings.model_overrides(preset(arch)))
    splits = make_splits(cube, settings.folds, settings.fold, settings.val_fraction, settings.seed)
    _check_batch(settings.batch_for(cube.mode), splits, "--batch-size")
    return cube, splits


def _check_batch(global_batch: int, splits: list[Split], what: str) -> None:
    """UserError when a split has fewer training samples than one global batch."""
    for split in splits:
        if len(split.train) < global_batch:
            raise UserError(
                f"{what} {global_batch} is larger than the {len(split.train)} training samples of "
                f"{split.name}; lower --batch-size or use a larger cube"
            )


def train(settings: TrainSettings, resume: bool = False) -> RunResult:
    """Train every arch of `settings` on every split; returns the run folder and the best metrics.

    Steps: check the inputs (no TensorFlow yet), resolve the run folder, make the strategy and check the global
    batch, then train arch by arch and write the summaries. Only the chief writes the run folder; other workers
    write to a temporary folder that is removed at the end.
    """
    cube, splits = _check_inputs(settings)
    augment = _augment_config(settings, cube)
    chief = is_chief()
    run_dir = _resolve_run_dir(settings, cube, chief, resume)
    strategy = make_strategy(settings.strategy)
    batch = settings.batch_for(cube.mode)
    replicas = strategy.num_replicas_in_sync
    _check_batch(batch * replicas, splits, f"the global batch ({replicas} replicas x {batch}) =")
    write_root = run_dir if chief else Path(tempfile.mkdtemp(prefix="spine_keras_worker_"))
    ctx = Context(settings, cube, strategy, batch, chief, resume, augment, precision_policy(settings.mixed_precision))
    try:
        return _train_all(ctx, splits, run_dir, write_root)
    finally:
        if not chief:
            shutil.rmtree(write_root, ignore_errors=True)


def _resolve_run_dir(settings: TrainSettings, cube: CubeInfo, chief: bool, resume: bool) -> Path:
    """--out or a fresh `runs/...` folder; UserError for a file, or (chief only) a non-empty folder without --resume."""
    run_dir = Path(settings.out) if settings.out else default_run_dir(settings.arch, cube.mode)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out '{run_dir}' is a file; give a folder for the run")
    if chief and not resume and run_dir.exists() and any(run_dir.iterdir()):
        raise UserError(
            f"run folder '{run_dir}' already exists; continue it with --resume {run_dir} or choose another --out"
        )
    return run_dir


def _train_all(ctx: Context, splits: list[Split], run_dir: Path, write_root: Path) -> RunResult:
    """Every job of the run, arch by arch, then the cross-arch comparison; this process writes under `write_root`."""
    settings = ctx.settings
    outcome = RunResult(run_dir)
    write_root.mkdir(parents=True, exist_ok=True)
    if len(settings.arch) > 1 or len(splits) > 1:
        _write_run_config(settings, splits, ctx.cube, write_root)
    with dtype_policy(ctx.policy):
        for arch in settings.arch:
            _train_arch(ctx, arch, splits, run_dir, write_root, outcome.results.setdefault(arch, []))
    if len(settings.arch) > 1:
        write_comparison(outcome.results, ctx.cube.class_names, write_root)
    return outcome


def _write_run_config(settings: TrainSettings, splits: list[Split], cube: CubeInfo, write_root: Path) -> None:
    """config.json at the top of a multi-job run: the settings, every split, the cube and the versions."""
    write_json(
        {
            "settings": settings.to_dict(),
            "splits": [s.to_dict() for s in splits],
            "cube": {"path": str(cube.path.resolve()), "attrs": cube.attrs},
            "versions": versions(),
        },
        write_root / "config.json",
    )


def _train_arch(
    ctx: Context, arch: str, splits: list[Split], run_dir: Path, write_root: Path, results: list[dict[str, Any]]
) -> None:
    """Train `arch` on each split, appending each job's result to `results`; several folds get a fold summary."""
    n_archs = len(ctx.settings.arch)
    for split in splits:
        folder = job_folder(run_dir, arch, split, n_archs, len(splits))
        target = write_root / folder.relative_to(run_dir)
        results.append(train_job(ctx, arch, split, folder, target))
    if len(splits) > 1:
        write_fold_summary(results, ctx.cube.class_names, write_root / (arch if n_archs > 1 else ""))
