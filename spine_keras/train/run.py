"""A training run: check every input, then train each arch on each split, then write the summaries.

Layout of the run folder: one arch on one split is itself a bundle; several folds give `fold_<i>/` bundles
plus `folds.csv|md`; several archs give `<arch>/` folders (each as above) plus `comparison.md|csv|png`.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spine_keras.bundle import versions, write_json
from spine_keras.data import CubeInfo, Split
from spine_keras.destinations import disk_errors, writer_lock
from spine_keras.train.compare import write_comparison, write_fold_summary
from spine_keras.train.job import Context, train_job
from spine_keras.train.preflight import (
    STATE_NAME,
    Plan,
    check_batch,
    check_run_folder,
    cube_identity,
    default_run_dir,
    job_folder,
    plan_run,
    stale_temporaries,
)
from spine_keras.train.settings import MONITOR, TrainSettings
from spine_keras.train.strategy import dtype_policy, make_strategy, precision_policy

__all__ = ["RunResult", "default_run_dir", "job_folder", "run_plan", "train"]


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


def train(settings: TrainSettings, resume: bool = False, cube_check: str = "full") -> RunResult:
    """Check every input (`plan_run`, writing nothing), then train every arch of `settings` on every split."""
    return run_plan(plan_run(settings, resume, cube_check))


def run_plan(plan: Plan) -> RunResult:
    """Train a checked run. Steps: make the strategy and check the global batch, claim the run folder (locked
    against a second writer; on resume, stale temporaries of a killed save are removed), then train arch by arch
    and write the summaries. Only the chief writes the run folder; other workers write to a temporary folder that
    is removed at the end. A fresh run that stops before its first epoch is saved leaves no run folder."""
    strategy = make_strategy(plan.settings.strategy)
    batch = plan.settings.batch_for(plan.cube.mode)
    replicas = strategy.num_replicas_in_sync
    check_batch(batch * replicas, plan.splits, f"the global batch ({replicas} replicas x {batch}) =")
    policy = precision_policy(plan.settings.mixed_precision)
    ctx = Context(plan.settings, plan.cube, strategy, batch, plan.chief, plan.resume, plan.augment, policy)
    if not plan.chief:
        write_root = Path(tempfile.mkdtemp(prefix="spine_keras_worker_"))
        try:
            return _train_all(ctx, plan.splits, plan.run_dir, write_root)
        finally:
            shutil.rmtree(write_root, ignore_errors=True)
    with _claimed(plan):
        return _train_all(ctx, plan.splits, plan.run_dir, plan.run_dir)


@contextlib.contextmanager
def _claimed(plan: Plan) -> Iterator[None]:
    """Create and lock the run folder for the block; remove what a fresh run created if it stops before saving."""
    run_dir = plan.run_dir
    created = next((p for p in reversed([run_dir, *run_dir.parents]) if not p.exists()), None)
    with disk_errors(run_dir, "the run folder"):
        run_dir.mkdir(parents=True, exist_ok=True)
    with writer_lock(run_dir, "run folder"):
        check_run_folder(run_dir, plan.resume, chief=True)  # again, now that no other writer can start
        try:
            if plan.resume:
                for tmp in stale_temporaries(run_dir):
                    tmp.unlink(missing_ok=True)
            yield
        except BaseException:
            if not plan.resume and not any(run_dir.rglob(STATE_NAME)):
                _remove_fresh(run_dir, created)
            raise


def _remove_fresh(run_dir: Path, created: Path | None) -> None:
    """Undo a fresh run that saved no epoch: the folders it created, or the contents of the empty one it was given."""
    if created is not None:
        shutil.rmtree(created, ignore_errors=True)
        return
    for child in run_dir.iterdir():
        shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)


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
            "cube": {"path": str(cube.path.resolve()), "attrs": cube.attrs, **cube_identity(cube)},
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
